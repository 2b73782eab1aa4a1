#include "daemon/bus/callback_guard.hpp"

#include "daemon/core/log_limiter.hpp"
#include "daemon/core/logging.hpp"

namespace orgd {

Counter& CallbackErrors::counter(MetricsRegistry& metrics, const char* callback) {
  return metrics.counter("orgd_callback_errors_total",
                         "Exceptions caught at the nats.c callback boundary, by callback",
                         {{"callback", callback}});
}

void CallbackErrors::report(const char* callback, Counter* errors, const char* what) noexcept {
  if (errors != nullptr) errors->inc();
  static LogLimiter limiter;
  std::uint64_t suppressed = 0;
  if (!limiter.allow(&suppressed)) return;
  try {
    if (suppressed > 0) {
      logging::get("bus")->error("callback {} failed: {} ({} earlier callback errors not logged)",
                                 callback, what, suppressed);
    } else {
      logging::get("bus")->error("callback {} failed: {}", callback, what);
    }
  } catch (...) {
    // Logging itself failed (out of memory): the counter has it.
  }
}

}  // namespace orgd
