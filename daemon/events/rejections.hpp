#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/http/metrics.hpp"

namespace orgd {

// Header names of dead letters on P.dlq.<origin>.
inline constexpr const char* kDlqReasonHeader = "Orgd-Dlq-Reason";
inline constexpr const char* kDlqSubjectHeader = "Orgd-Dlq-Subject";
inline constexpr const char* kDlqCodeHeader = "Orgd-Dlq-Code";

// An error reply per DESIGN.md §5: ADR-32 error headers and the error body in `encoding`.
BusMessage make_error_reply(const std::string& reply_subject, const Error& error,
                            Encoding encoding);

// What happens to bad input everywhere in orgd: an error reply when the input has a reply
// subject, a copy on P.dlq.<origin> (origin = the input subject without the prefix) with the
// reason, a counter, and a log line (rate-limited, so hostile input cannot flood the log).
class Rejections {
 public:
  Rejections(std::string prefix, Publisher& publisher, MetricsRegistry& metrics);

  // `kind` labels the counter: "health", "api", "cmd", ...
  void reject(const BusMessage& input, const Error& error, std::string_view kind,
              Encoding encoding);

  std::string dlq_subject(std::string_view input_subject) const;

 private:
  bool should_log();

  std::string prefix_;
  Publisher& publisher_;
  MetricsRegistry& metrics_;
  std::atomic<std::int64_t> log_window_start_{0};
  std::atomic<int> logged_in_window_{0};
};

}  // namespace orgd
