#include "daemon/deploy/record_pages.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "daemon/core/paging.hpp"

namespace orgd::deploy {

namespace {

bool wanted(const v1::DeployStep& step, const v1::DeployGetRequest& request) {
  if (request.states().empty()) return true;
  return std::find(request.states().begin(), request.states().end(), step.state()) !=
         request.states().end();
}

}  // namespace

Result<v1::DeployRecord> record_page(v1::DeployRecord record, const v1::DeployGetRequest& request) {
  auto page = read_page(request.page_size(), request.cursor());
  if (!page) return Error{page.error()};
  const int total = record.steps_size();
  // The cursor is the index of the first step of the page.
  int start = 0;
  if (!page.value().after.empty()) {
    const std::string& cursor = page.value().after;
    const auto parsed = std::from_chars(cursor.data(), cursor.data() + cursor.size(), start);
    if (parsed.ec != std::errc{} || parsed.ptr != cursor.data() + cursor.size() || start < 0 ||
        start > total) {
      return invalid_argument(fmt::format(
          "cursor '{}' is not one of this deploy's: pass the next_cursor of the page before",
          cursor));
    }
  }
  v1::DeployRecord out;
  // Everything but the steps, then the page.
  {
    google::protobuf::RepeatedPtrField<v1::DeployStep> all;
    all.Swap(record.mutable_steps());
    out = std::move(record);
    out.clear_steps();
    const std::size_t size = page.value().size;
    int i = start;
    for (; i < total && static_cast<std::size_t>(out.steps_size()) < size; ++i) {
      if (wanted(all.Get(i), request)) *out.add_steps() = std::move(*all.Mutable(i));
    }
    while (i < total && !wanted(all.Get(i), request)) ++i;
    if (i < total) out.set_next_cursor(std::to_string(i));
  }
  out.set_total_steps(total);
  return out;
}

void trim_for_list(v1::DeployRecord& record) {
  // A record read for a list holds its first steps only, total_steps saying how many there are
  // (0: one stored whole, read whole).
  record.set_total_steps(std::max(record.total_steps(), record.steps_size()));
  if (record.steps_size() > kListedSteps) {
    record.mutable_steps()->DeleteSubrange(kListedSteps, record.steps_size() - kListedSteps);
  }
  if (record.total_steps() > record.steps_size()) {
    record.set_next_cursor(std::to_string(record.steps_size()));
  }
}

}  // namespace orgd::deploy
