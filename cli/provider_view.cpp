#include "cli/provider_view.hpp"

#include <fmt/format.h>

#include <vector>

#include "cli/deploy_view.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd::cli {

namespace {

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out.empty() ? "-" : out;
}

std::string rate_limit(const v1::ProviderStatus& p, std::chrono::system_clock::time_point now) {
  if (!p.has_rate_limit_remaining()) return "-";
  std::string out = std::to_string(p.rate_limit_remaining());
  if (p.has_rate_limit_limit()) out += "/" + std::to_string(p.rate_limit_limit());
  if (is_set(p.rate_limit_reset())) {
    const auto in = std::chrono::duration_cast<std::chrono::seconds>(
        from_timestamp(p.rate_limit_reset()) - now);
    if (in.count() > 0) out += " (resets in " + format_duration(in) + ")";
  }
  return out;
}

}  // namespace

std::string render_provider_list(const v1::ProviderList& list,
                                 std::chrono::system_clock::time_point now) {
  if (list.providers().empty()) return "no providers\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : list.providers()) {
    const std::string probe = !p.probed() ? "-" : (p.ok() ? "ok" : "failed");
    std::string said = p.ok() || p.last_error().empty() ? p.detail() : p.last_error();
    rows.push_back({p.name(), p.type(), joined(p.capabilities()), probe, rate_limit(p, now),
                    p.circuit().empty() ? "-" : p.circuit(),
                    p.probed() ? format_age(p.checked_at(), now) : "-",
                    said.empty() ? "-" : sanitize_line(said)});
  }
  return render_table(
      {"NAME", "TYPE", "CAPABILITIES", "PROBE", "RATE LIMIT", "CIRCUIT", "CHECKED", "DETAIL"},
      rows);
}

}  // namespace orgd::cli
