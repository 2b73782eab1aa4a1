#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/core/metrics.hpp"

namespace orgd {

// Header names of dead letters on P.dlq.<origin>.
inline constexpr const char* kDlqReasonHeader = "Orgd-Dlq-Reason";
inline constexpr const char* kDlqSubjectHeader = "Orgd-Dlq-Subject";
inline constexpr const char* kDlqCodeHeader = "Orgd-Dlq-Code";
// The size of the rejected body in bytes, and its SHA-256 (lower-case hex): a dead letter keeps
// only a prefix of the body, so these say what the whole was.
inline constexpr const char* kDlqBodySizeHeader = "Orgd-Dlq-Body-Size";
inline constexpr const char* kDlqBodySha256Header = "Orgd-Dlq-Body-Sha256";
// "true" when the dead letter's body is a prefix of the input's.
inline constexpr const char* kDlqBodyTruncatedHeader = "Orgd-Dlq-Body-Truncated";
// Why the body is not there at all ("secrets": inputs of secrets.* never keep one).
inline constexpr const char* kDlqBodyOmittedHeader = "Orgd-Dlq-Body-Omitted";

// What a dead letter may cost. Each one is a JetStream write into ORGD_DLQ (256 MiB, oldest
// dropped first), so a flood of bad input must neither cost a write per message nor push the
// real dead letters out.
struct DeadLetterLimits {
  // Bytes of the rejected body kept.
  std::size_t body_prefix = 4096;
  // Per origin (the input subject without the prefix): a token bucket, dead letters a second
  // and the burst allowed.
  double origin_rate = 5;
  double origin_burst = 20;
  // Per kind of input (health, api, cmd), over all its origins: subjects are the sender's to
  // choose, so this bounds a flood spread over many of them.
  double kind_rate = 50;
  double kind_burst = 200;
  // Origins tracked at once; beyond it an origin new to the table is limited by its kind alone.
  std::size_t max_origins = 1024;
  // Input headers copied (of those allowed), their names' and values' lengths.
  std::size_t max_headers = 16;
  std::size_t max_header_name = 64;
  std::size_t max_header_value = 256;
};

// An error reply per DESIGN.md §5: ADR-32 error headers and the error body in `encoding`.
BusMessage make_error_reply(const std::string& reply_subject, const Error& error,
                            Encoding encoding);

// Headers whose values are credentials, matched case-insensitively: Authorization,
// Proxy-Authorization, Cookie, Set-Cookie, and names containing auth, token, secret, password,
// passwd, credential, session, cookie, signature, jwt, nkey, seed, api-key or apikey ('_' counts
// as '-'). Dead letters never carry them.
bool credential_header(std::string_view name);

// What happens to bad input everywhere in orgd: an error reply when the input has a reply
// subject, a dead letter on P.dlq.<origin> (origin = the input subject without the prefix) with
// the reason, a counter, and a log line (rate-limited, so hostile input cannot flood the log).
//
// A dead letter keeps a bounded prefix of the body with the whole body's size and SHA-256, the
// input's headers without credentials, and no body (nor hash) at all when the origin is a
// secrets one (a `secrets` token in it: api.secrets.set, cmd.secrets.sync, ...). Dead letters are
// rate-limited per origin and per kind; those past a limit are counted
// (orgd_dead_letters_suppressed_total{kind}), not written. Thread-safe.
class Rejections {
 public:
  Rejections(std::string prefix, Publisher& publisher, MetricsRegistry& metrics,
             DeadLetterLimits limits = {}, const Clock* clock = nullptr);

  // `kind` labels the counter: "health", "api", "cmd", ...
  void reject(const BusMessage& input, const Error& error, std::string_view kind,
              Encoding encoding);

  std::string dlq_subject(std::string_view input_subject) const;

  // False for reply subjects an error reply must not go to: orgd's own (P.*) and system ones
  // ($JS.*, $KV.*, $SYS.*, ...); counted in orgd_error_replies_refused_total{kind}.
  bool reply_subject_allowed(std::string_view reply) const;

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point last{};
  };
  bool should_log();
  // Takes a token from the origin's and the kind's buckets; false (and none taken) when either
  // is empty.
  bool admit(const std::string& origin, const std::string& kind);
  static void refill(Bucket& bucket, double rate, double burst, Clock::time_point now);
  BusMessage dead_letter(const BusMessage& input, std::string_view origin,
                         const std::string& reason, const Error& error) const;

  std::string prefix_;
  Publisher& publisher_;
  MetricsRegistry& metrics_;
  const DeadLetterLimits limits_;
  const Clock& clock_;
  std::mutex buckets_mutex_;  // guards the two maps
  std::unordered_map<std::string, Bucket> origin_buckets_;
  std::unordered_map<std::string, Bucket> kind_buckets_;
  Clock::time_point last_sweep_{};
  std::atomic<std::int64_t> log_window_start_{0};
  std::atomic<int> logged_in_window_{0};
};

}  // namespace orgd
