#include "daemon/net/circuit_breaker.hpp"

namespace orgd::net {

std::string_view circuit_state_name(CircuitState state) {
  switch (state) {
    case CircuitState::closed:
      return "closed";
    case CircuitState::half_open:
      return "half_open";
    case CircuitState::open:
      return "open";
  }
  return "closed";
}

CircuitBreaker::Admission CircuitBreaker::admit(time_point now) {
  std::lock_guard lock(mutex_);
  if (failures_ <= 0) return {true, false, {}};  // breaker turned off
  if (state_ == CircuitState::closed) return {true, false, {}};
  if (state_ == CircuitState::open) {
    const auto reopen = opened_at_ + open_for_;
    if (now < reopen) {
      return {false, false, std::chrono::ceil<std::chrono::milliseconds>(reopen - now)};
    }
    state_ = CircuitState::half_open;
  }
  // Half-open: one trial at a time; the others are refused until it has answered.
  if (trial_in_flight_) return {false, false, std::chrono::milliseconds{0}};
  trial_in_flight_ = true;
  return {true, true, {}};
}

void CircuitBreaker::record_success() {
  std::lock_guard lock(mutex_);
  consecutive_failures_ = 0;
  state_ = CircuitState::closed;
  trial_in_flight_ = false;
}

void CircuitBreaker::record_failure(time_point now) {
  std::lock_guard lock(mutex_);
  if (failures_ <= 0) return;
  ++consecutive_failures_;
  if (state_ == CircuitState::half_open || consecutive_failures_ >= failures_) {
    state_ = CircuitState::open;
    opened_at_ = now;
  }
  trial_in_flight_ = false;
}

void CircuitBreaker::abandon(bool trial) {
  if (!trial) return;
  std::lock_guard lock(mutex_);
  trial_in_flight_ = false;
}

CircuitState CircuitBreaker::state(time_point now) const {
  std::lock_guard lock(mutex_);
  if (state_ == CircuitState::open && now >= opened_at_ + open_for_) return CircuitState::half_open;
  return state_;
}

}  // namespace orgd::net
