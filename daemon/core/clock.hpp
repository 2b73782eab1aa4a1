#pragma once

#include <atomic>
#include <chrono>

namespace orgd {

// Injected time, so logic that depends on it (staleness, timeouts) is testable without sleeping.
class Clock {
 public:
  using time_point = std::chrono::system_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
};

class SystemClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::system_clock::now(); }
};

// The one SystemClock, for defaults.
inline const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}

// A clock that moves only when told to (tests).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(time_point start = time_point{std::chrono::seconds{1'700'000'000}})
      : now_(start.time_since_epoch().count()) {}
  time_point now() const override { return time_point{time_point::duration{now_.load()}}; }
  void advance(std::chrono::nanoseconds d) {
    now_ += std::chrono::duration_cast<time_point::duration>(d).count();
  }
  void set(time_point t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<time_point::rep> now_;
};

}  // namespace orgd
