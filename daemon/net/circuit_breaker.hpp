#pragma once

// A circuit breaker per provider: after `failures` consecutive failed calls the circuit opens
// and calls fail at once for `open_for` (a provider that is down is not hammered, and callers
// learn it without waiting out timeouts); then one trial call is let through (half-open): its
// success closes the circuit, its failure opens it again. Time is passed in, so the state
// machine is tested without waiting.

#include <chrono>
#include <mutex>
#include <string_view>

namespace orgd::net {

enum class CircuitState { closed = 0, half_open = 1, open = 2 };

std::string_view circuit_state_name(CircuitState state);

class CircuitBreaker {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  CircuitBreaker(int failures, std::chrono::milliseconds open_for)
      : failures_(failures), open_for_(open_for) {}

  struct Admission {
    bool allowed = false;
    bool trial = false;  // this call is the half-open trial: report its outcome
    std::chrono::milliseconds retry_after{0};  // refused: until the next trial may run
  };
  // Whether a call may go ahead now. A refused call reports nothing back.
  Admission admit(time_point now);
  // The outcome of an admitted call.
  void record_success();
  void record_failure(time_point now);
  // An admitted call that ended without learning anything of the provider's health (refused
  // by a rate limit before it was sent, an answer over the body limit): a trial is freed.
  void abandon(bool trial);
  // The state as seen at `now` (an open circuit whose time is up reads half-open).
  CircuitState state(time_point now) const;

 private:
  const int failures_;
  const std::chrono::milliseconds open_for_;
  mutable std::mutex mutex_;  // guards the members below
  CircuitState state_ = CircuitState::closed;
  int consecutive_failures_ = 0;
  time_point opened_at_{};
  bool trial_in_flight_ = false;
};

}  // namespace orgd::net
