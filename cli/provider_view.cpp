#include "cli/provider_view.hpp"

#include <fmt/format.h>

#include <cstdint>
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

// Bytes as KiB/MiB/GiB for the *_bytes quotas, counts as they are.
std::string quota_value(const std::string& name, std::int64_t value) {
  const bool bytes = name.size() > 6 && name.compare(name.size() - 6, 6, "_bytes") == 0;
  if (!bytes || value < 1024) return std::to_string(value);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(value);
  int unit = -1;
  while (v >= 1024 && unit < 3) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, units[unit]);
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
  std::string out = render_table(
      {"NAME", "TYPE", "CAPABILITIES", "PROBE", "RATE LIMIT", "CIRCUIT", "CHECKED", "DETAIL"},
      rows);
  std::vector<std::vector<std::string>> quotas;
  for (const auto& p : list.providers()) {
    for (const auto& q : p.quotas()) {
      quotas.push_back({p.name(), sanitize_line(q.name()),
                        q.has_used() ? quota_value(q.name(), q.used()) : "-",
                        q.has_limit() ? quota_value(q.name(), q.limit()) : "unlimited"});
    }
  }
  if (!quotas.empty()) out += "\n" + render_table({"PROVIDER", "QUOTA", "USED", "LIMIT"}, quotas);
  return out;
}

}  // namespace orgd::cli
