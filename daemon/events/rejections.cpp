#include "daemon/events/rejections.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "daemon/core/logging.hpp"

namespace orgd {
namespace {

// A header value or reason on one line.
std::string one_line(std::string_view text, std::size_t max) {
  std::string line(text.substr(0, max));
  for (auto& c : line) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  return line;
}

std::string lower_dashed(std::string_view name) {
  std::string out(name);
  for (auto& c : out) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

bool starts_with_icase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

// A value that carries its own credential scheme, whatever the header's name.
bool credential_value(std::string_view value) {
  const auto start = value.find_first_not_of(' ');
  if (start == std::string_view::npos) return false;
  value.remove_prefix(start);
  for (std::string_view scheme : {"bearer ", "basic ", "digest ", "token ", "negotiate "}) {
    if (starts_with_icase(value, scheme)) return true;
  }
  return false;
}

// Inputs whose bodies are secrets or sealed secrets: a `secrets` token anywhere in the origin.
bool secrets_origin(std::string_view origin) {
  std::size_t start = 0;
  while (start <= origin.size()) {
    const auto dot = origin.find('.', start);
    const auto token = origin.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token == "secrets") return true;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return false;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size());
  std::array<char, crypto_hash_sha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  return std::string(hex.data(), crypto_hash_sha256_BYTES * 2);
}

}  // namespace

bool credential_header(std::string_view name) {
  const std::string n = lower_dashed(name);
  for (std::string_view word :
       {"auth", "token", "secret", "password", "passwd", "credential", "session", "cookie",
        "signature", "jwt", "nkey", "seed", "api-key", "apikey"}) {
    if (n.find(word) != std::string::npos) return true;
  }
  return false;
}

BusMessage make_error_reply(const std::string& reply_subject, const Error& error,
                            Encoding encoding) {
  BusMessage reply;
  reply.subject = reply_subject;
  reply.data = encode_error(error, encoding);
  reply.headers = {{"Nats-Service-Error", one_line(error.message, 512)},
                   {"Nats-Service-Error-Code", std::to_string(http_status(error.code))},
                   {std::string(kContentTypeHeader), std::string(content_type(encoding))}};
  return reply;
}

Rejections::Rejections(std::string prefix, Publisher& publisher, MetricsRegistry& metrics,
                       DeadLetterLimits limits, const Clock* clock)
    : prefix_(std::move(prefix)),
      publisher_(publisher),
      metrics_(metrics),
      limits_(limits),
      clock_(clock != nullptr ? *clock : system_clock()) {}

bool Rejections::reply_subject_allowed(std::string_view reply) const {
  // orgd publishes with its own permissions: a reply subject chosen by the sender must not make
  // it write into its own streams (P.cmd.>, P.events.>, P.dlq.>, ...) nor make system calls
  // as orgd ($JS.API.STREAM.PURGE.ORGD_DLQ, $KV.orgd_locks.*).
  if (reply.starts_with('$')) return false;
  if (reply.size() > prefix_.size() && reply.substr(0, prefix_.size()) == prefix_ &&
      reply[prefix_.size()] == '.') {
    return false;
  }
  return reply.find_first_of("*> \t\r\n") == std::string_view::npos;
}

std::string Rejections::dlq_subject(std::string_view input_subject) const {
  std::string_view origin = input_subject;
  if (origin.size() > prefix_.size() + 1 && origin.substr(0, prefix_.size()) == prefix_ &&
      origin[prefix_.size()] == '.') {
    origin.remove_prefix(prefix_.size() + 1);
  }
  return prefix_ + ".dlq." + std::string(origin);
}

bool Rejections::should_log() {
  // At most 10 lines a second; the counter has the full count.
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
                 .count();
  auto start = log_window_start_.load();
  if (now != start && log_window_start_.compare_exchange_strong(start, now)) {
    logged_in_window_.store(0);
  }
  return logged_in_window_.fetch_add(1) < 10;
}

void Rejections::refill(Bucket& bucket, double rate, double burst, Clock::time_point now) {
  // A clock stepped back refills nothing.
  const double elapsed = std::max(0.0, std::chrono::duration<double>(now - bucket.last).count());
  bucket.tokens = std::min(burst, bucket.tokens + elapsed * rate);
  bucket.last = now;
}

bool Rejections::admit(const std::string& origin, const std::string& kind) {
  const auto now = clock_.now();
  std::lock_guard lock(buckets_mutex_);
  auto origin_bucket = origin_buckets_.find(origin);
  if (origin_bucket == origin_buckets_.end()) {
    // A bucket refilled to its burst is the same as none: those are forgotten when the table is
    // full, at most once a second (a flood of new origins must not sweep it on every message).
    if (origin_buckets_.size() >= limits_.max_origins &&
        now - last_sweep_ >= std::chrono::seconds{1}) {
      last_sweep_ = now;
      std::erase_if(origin_buckets_, [&](const auto& entry) {
        Bucket bucket = entry.second;
        refill(bucket, limits_.origin_rate, limits_.origin_burst, now);
        return bucket.tokens >= limits_.origin_burst;
      });
    }
    if (origin_buckets_.size() < limits_.max_origins) {
      origin_bucket = origin_buckets_.emplace(origin, Bucket{limits_.origin_burst, now}).first;
    }
  }
  Bucket& kind_bucket =
      kind_buckets_.try_emplace(kind, Bucket{limits_.kind_burst, now}).first->second;
  refill(kind_bucket, limits_.kind_rate, limits_.kind_burst, now);
  if (kind_bucket.tokens < 1) return false;
  // An origin the table has no room for is limited by its kind alone.
  if (origin_bucket != origin_buckets_.end()) {
    Bucket& bucket = origin_bucket->second;
    refill(bucket, limits_.origin_rate, limits_.origin_burst, now);
    // Over its own limit, an origin does not use up its kind's tokens.
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
  }
  kind_bucket.tokens -= 1;
  return true;
}

BusMessage Rejections::dead_letter(const BusMessage& input, std::string_view origin,
                                   const std::string& reason, const Error& error) const {
  BusMessage dead;
  dead.subject = prefix_ + ".dlq." + std::string(origin);
  std::size_t copied = 0;
  for (const auto& [name, value] : input.headers) {
    if (copied == limits_.max_headers) break;
    // Our own DLQ headers are set below; a hostile input cannot pre-set them.
    if (starts_with_icase(name, "Orgd-Dlq-") || starts_with_icase(name, "Nats-")) continue;
    if (name.empty() || name.size() > limits_.max_header_name) continue;
    if (credential_header(name) || credential_value(value)) continue;
    dead.headers.emplace_back(name, one_line(value, limits_.max_header_value));
    ++copied;
  }
  dead.headers.emplace_back(kDlqReasonHeader, reason);
  dead.headers.emplace_back(kDlqSubjectHeader, input.subject);
  dead.headers.emplace_back(kDlqCodeHeader, std::to_string(http_status(error.code)));
  dead.headers.emplace_back(kDlqBodySizeHeader, std::to_string(input.data.size()));
  if (secrets_origin(origin)) {
    // Not even a hash: a short secret's hash is as good as the secret to whoever guesses.
    if (!input.data.empty()) dead.headers.emplace_back(kDlqBodyOmittedHeader, "secrets");
    return dead;
  }
  dead.headers.emplace_back(kDlqBodySha256Header, sha256_hex(input.data));
  if (input.data.size() > limits_.body_prefix) {
    dead.data = input.data.substr(0, limits_.body_prefix);
    dead.headers.emplace_back(kDlqBodyTruncatedHeader, "true");
  } else {
    dead.data = input.data;
  }
  return dead;
}

void Rejections::reject(const BusMessage& input, const Error& error, std::string_view kind,
                        Encoding encoding) {
  const std::string kind_label(kind);
  metrics_
      .counter("orgd_messages_rejected_total", "Inputs rejected, by kind and error code",
               {{"kind", kind_label}, {"code", std::string(code_name(error.code))}})
      .inc();
  if (!input.reply.empty()) {
    if (reply_subject_allowed(input.reply)) {
      (void)publisher_.publish(make_error_reply(input.reply, error, encoding));
    } else {
      metrics_
          .counter("orgd_error_replies_refused_total",
                   "Error replies not sent: the reply subject was orgd's own or a system one",
                   {{"kind", kind_label}})
          .inc();
    }
  }
  const std::string reason = one_line(error.message, 512);
  const std::string dlq = dlq_subject(input.subject);
  const std::string origin = dlq.substr(prefix_.size() + sizeof(".dlq.") - 1);
  if (!admit(origin, kind_label)) {
    metrics_
        .counter("orgd_dead_letters_suppressed_total",
                 "Rejected inputs not written to the DLQ: their origin or kind was over its "
                 "rate limit",
                 {{"kind", kind_label}})
        .inc();
  } else if (!publisher_.publish(dead_letter(input, origin, reason, error)).ok()) {
    metrics_.counter("orgd_dlq_publish_failures_total", "Dead letters that could not be published")
        .inc();
  }
  if (should_log()) {
    logging::get("events")->warn("rejected {} input on {}: {}", kind, input.subject, reason);
  }
}

}  // namespace orgd
