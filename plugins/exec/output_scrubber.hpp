#pragma once

// What a deploy command prints may hold the secrets it was given (a `set -x`, a tool that echoes
// its config): every line is scrubbed of them before it becomes a log line, an event or a step's
// error. Lines are scrubbed whole, so a value the command wrote in two pieces (two writes, two
// reads of the pipe) is found like any other.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/secret.hpp"

namespace orgd {

class OutputScrubber {
 public:
  // Shorter values are not replaced: "***" for every "true" or "1234" in a log would hide the
  // log, not a secret.
  static constexpr std::size_t kMinValueBytes = 4;
  static constexpr const char* kMask = "***";

  OutputScrubber() = default;
  // The values are borrowed: they must outlive the scrubber. A multi-line value is looked for
  // line by line (output is scrubbed a line at a time), each of its lines of kMinValueBytes or
  // more (without a CR of a CRLF).
  explicit OutputScrubber(const std::vector<const Secret*>& values);

  bool empty() const { return patterns_.empty(); }
  // The longest piece looked for: a line cut at N bytes must be scrubbed with N + longest()
  // bytes of it, or a value straddling the cut would leave its first bytes.
  std::size_t longest() const { return longest_; }
  // Every stretch of `line` covered by one or more occurrences (overlapping or adjacent ones
  // included) becomes one kMask.
  std::string scrub(std::string_view line) const;

 private:
  std::vector<std::string_view> patterns_;
  std::size_t longest_ = 0;
};

}  // namespace orgd
