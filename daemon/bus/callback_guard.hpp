#pragma once

#include <exception>
#include <utility>

#include "daemon/core/metrics.hpp"

namespace orgd {

// The one way orgd's code runs inside a function that nats.c calls (message handlers,
// advisories, connection state, the error handler, the closed handler, JetStream acks, signing
// callbacks): an exception must never unwind into C, where it aborts the process. Whatever the
// body throws is caught, counted in orgd_callback_errors_total{callback=<name>} and logged
// (rate-limited: a hostile message can make every call throw), and the callback returns
// `fallback`.
//
//   guard_callback("cmd.advisory", errors_, [&] { handle_advisory(msg); });
//
// `errors` may be null (a connection built without metrics, e.g. orgctl's): the error is then
// only logged.
class CallbackErrors {
 public:
  // The counter of one callback, registered at once so /metrics shows it at 0.
  static Counter& counter(MetricsRegistry& metrics, const char* callback);
  // Counts and logs (rate-limited). Never throws.
  static void report(const char* callback, Counter* errors, const char* what) noexcept;
};

template <typename Body>
void guard_callback(const char* callback, Counter* errors, Body&& body) noexcept {
  try {
    std::forward<Body>(body)();
  } catch (const std::exception& e) {
    CallbackErrors::report(callback, errors, e.what());
  } catch (...) {
    CallbackErrors::report(callback, errors, "unknown exception");
  }
}

// For callbacks that must return something to nats.c (a status, a delay).
template <typename T, typename Body>
T guard_callback_or(const char* callback, Counter* errors, T fallback, Body&& body) noexcept {
  try {
    return std::forward<Body>(body)();
  } catch (const std::exception& e) {
    CallbackErrors::report(callback, errors, e.what());
  } catch (...) {
    CallbackErrors::report(callback, errors, "unknown exception");
  }
  return fallback;
}

}  // namespace orgd
