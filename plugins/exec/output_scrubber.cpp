#include "plugins/exec/output_scrubber.hpp"

#include <algorithm>

namespace orgd {

OutputScrubber::OutputScrubber(const std::vector<const Secret*>& values) {
  auto add = [&](std::string_view piece) {
    if (!piece.empty() && piece.back() == '\r') piece.remove_suffix(1);
    if (piece.size() < kMinValueBytes) return;
    if (std::find(patterns_.begin(), patterns_.end(), piece) != patterns_.end()) return;
    patterns_.push_back(piece);
    longest_ = std::max(longest_, piece.size());
  };
  for (const Secret* value : values) {
    if (value == nullptr) continue;
    std::string_view rest = value->expose();
    while (true) {
      const auto nl = rest.find('\n');
      add(rest.substr(0, nl));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
  }
}

std::string OutputScrubber::scrub(std::string_view line) const {
  if (patterns_.empty()) return std::string{line};
  std::vector<bool> covered(line.size(), false);
  bool any = false;
  for (const auto pattern : patterns_) {
    for (auto at = line.find(pattern); at != std::string_view::npos;
         at = line.find(pattern, at + 1)) {
      std::fill(covered.begin() + static_cast<std::ptrdiff_t>(at),
                covered.begin() + static_cast<std::ptrdiff_t>(at + pattern.size()), true);
      any = true;
    }
  }
  if (!any) return std::string{line};
  std::string out;
  out.reserve(line.size());
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (!covered[i]) {
      out.push_back(line[i]);
    } else if (i == 0 || !covered[i - 1]) {
      out += kMask;
    }
  }
  return out;
}

}  // namespace orgd
