#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace orgd {

// At most `per_second` log lines a second from one source; the rest are suppressed and counted,
// so input that an outsider controls (hostile messages, a flood that makes orgd a slow consumer)
// cannot flood the log. The metric next to the log line has the full count. Lock-free: it is
// called on nats.c threads.
class LogLimiter {
 public:
  explicit LogLimiter(int per_second = 10) : per_second_(per_second) {}

  // True when this line may be written. The first line of a window reports, through
  // `suppressed_before`, how many lines the previous windows held back.
  bool allow(std::uint64_t* suppressed_before = nullptr) {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t start = window_start_.load(std::memory_order_relaxed);
    if (now != start && window_start_.compare_exchange_strong(start, now)) {
      used_.store(0, std::memory_order_relaxed);
    }
    if (used_.fetch_add(1, std::memory_order_relaxed) < per_second_) {
      if (suppressed_before != nullptr) *suppressed_before = suppressed_.exchange(0);
      return true;
    }
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

 private:
  const int per_second_;
  std::atomic<std::int64_t> window_start_{0};
  std::atomic<int> used_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace orgd
