#include "tests/support/wait.hpp"

#include <algorithm>
#include <thread>

namespace orgd::testing {

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds poll) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (pred()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(poll, until - now));
  }
}

}  // namespace orgd::testing
