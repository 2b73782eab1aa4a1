#include "plugins/remote/remote_client.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <stdexcept>

#include "daemon/core/config_values.hpp"
#include "daemon/core/log_limiter.hpp"

namespace orgd::remote {

namespace {

constexpr std::size_t kKeyBytes = crypto_box_PUBLICKEYBYTES;

// Failures of calls are logged, but a provider that answers garbage to every poll cannot flood
// the log: at most this many lines a second per process.
LogLimiter& failure_log_limiter() {
  static LogLimiter limiter(5);
  return limiter;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) {
    if (!out.empty()) out += ", ";
    out += printable(name, 40);
  }
  return out;
}

}  // namespace

std::vector<std::string> missing_capabilities(const Capabilities& declared,
                                              const std::vector<std::string>& announced) {
  std::vector<std::string> missing;
  for (const std::string& name : declared.names()) {
    if (std::find(announced.begin(), announced.end(), name) == announced.end()) {
      missing.push_back(name);
    }
  }
  return missing;
}

RemoteClient::RemoteClient(Settings settings, std::shared_ptr<NatsRequester> nats,
                           std::shared_ptr<spdlog::logger> log)
    : settings_(std::move(settings)),
      nats_(nats ? std::move(nats) : std::make_shared<UnconnectedNatsRequester>()),
      log_(std::move(log)) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialize");
  unsigned char secret[crypto_box_SECRETKEYBYTES];
  crypto_box_keypair(public_key_, secret);
  secret_key_ = Secret::from({reinterpret_cast<const char*>(secret), sizeof secret});
  sodium_memzero(secret, sizeof secret);
  public_key_base64_ = to_base64({reinterpret_cast<const char*>(public_key_), kKeyBytes});
}

RemoteClient::~RemoteClient() = default;

std::string RemoteClient::who(const std::string& op) const {
  return "remote provider " + settings_.name + ": " + op;
}

void RemoteClient::fail(const Error& error) {
  {
    std::lock_guard lock(mutex_);
    last_error_ = error.message;
  }
  std::uint64_t suppressed = 0;
  if (log_ && failure_log_limiter().allow(&suppressed)) {
    log_->warn(
        "{} ({}){}", error.message, retry_name(error.retry),
        suppressed > 0 ? fmt::format(" [{} similar lines suppressed]", suppressed) : std::string{});
  }
}

Result<Ok> RemoteClient::call(const std::string& op, const google::protobuf::Message& request,
                              google::protobuf::Message& reply, SteadyTime deadline) {
  const std::string name = who(op);
  Duration timeout = settings_.timeout;
  if (deadline != kNoDeadline) {
    const auto left =
        std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
    if (left <= Duration::zero()) {
      ++unanswered_;
      Error e = unavailable(name + ": the call's deadline passed before it was sent");
      fail(e);
      return e;
    }
    timeout = std::min(timeout, left);
  }
  const std::string subject = settings_.subject + "." + op;
  ++requests_;
  auto payload = nats_->request(subject, encode_request(request), timeout);
  if (!payload) {
    ++unanswered_;
    Error e = payload.error();
    e.message = name + ": " + e.message;
    fail(e);
    return e;
  }
  ReplyFault fault = ReplyFault::none;
  auto decoded = decode_reply(payload.value(), settings_.max_reply_bytes, name, reply, fault);
  if (!decoded) {
    if (fault == ReplyFault::malformed) {
      ++malformed_;
    } else {
      ++error_replies_;
    }
    fail(decoded.error());
    return decoded.error();
  }
  ++answered_;
  return Ok{};
}

Result<Described> RemoteClient::described(SteadyTime deadline) {
  {
    std::lock_guard lock(mutex_);
    if (described_) return *described_;
  }
  // Asked without the lock: a slow describe must not hold up callers with a shorter deadline
  // (two concurrent first uses may both ask, which is harmless).
  v1::PluginDescribeRequest request;
  request.set_provider(settings_.name);
  request.set_org(settings_.org);
  request.set_orgd_public_key(public_key_base64_);
  v1::PluginDescribeReply reply;
  auto called = call("describe", request, reply, deadline);
  if (!called) return called.error();

  Described d;
  d.name = reply.name();
  d.version = reply.version();
  d.capabilities.assign(reply.capabilities().begin(), reply.capabilities().end());
  const auto bad = [&](std::string what) -> Error {
    // An answer, but not one orgd can use: counted as malformed, not as answered.
    ++malformed_;
    --answered_;
    Error e = permanent(invalid_argument(who("describe") + ": " + std::move(what)));
    fail(e);
    return e;
  };
  if (const auto missing = missing_capabilities(settings_.capabilities, d.capabilities);
      !missing.empty()) {
    return bad(fmt::format(
        "the config declares capabilities the provider does not announce: {} (it announces: {})",
        join_names(missing),
        d.capabilities.empty() ? std::string{"none"} : join_names(d.capabilities)));
  }
  if (!reply.public_key().empty()) {
    auto key = from_base64(reply.public_key());
    if (!key || key->size() != kKeyBytes) {
      return bad("public_key is not standard base64 of a 32-byte X25519 key");
    }
    d.public_key = std::move(*key);
    d.public_key_base64 = reply.public_key();
  } else if (settings_.capabilities.secret_target) {
    return bad("announces no public_key, which a secret target needs (values are sealed to it)");
  }
  std::lock_guard lock(mutex_);
  if (!described_) {
    described_ = d;
    if (log_) {
      log_->info("remote provider {} on {}: {} {} ({})", settings_.name, settings_.subject,
                 printable(d.name, 64), printable(d.version, 32), join_names(d.capabilities));
    }
  }
  return *described_;
}

void RemoteClient::forget_described() {
  std::lock_guard lock(mutex_);
  described_.reset();
}

Result<std::string> RemoteClient::seal_for_provider(const Described& described,
                                                    const Secret& value) const {
  if (described.public_key.size() != kKeyBytes) {
    return permanent(invalid_argument(who("secret.put") + ": the provider announced no key"));
  }
  auto sealed = seal_to(described.public_key, value);
  if (!sealed) return sealed.error();
  return to_base64(sealed.value());
}

Result<Secret> RemoteClient::open_from_provider(std::string_view sealed_base64,
                                                const std::string& op) const {
  auto sealed = from_base64(sealed_base64);
  if (!sealed || sealed->size() < crypto_box_SEALBYTES) {
    return internal_error(who(op) + ": sealed_value is not base64 of a sealed box");
  }
  std::string clear(sealed->size() - crypto_box_SEALBYTES, '\0');
  const auto* secret = reinterpret_cast<const unsigned char*>(secret_key_.expose().data());
  if (crypto_box_seal_open(reinterpret_cast<unsigned char*>(clear.data()),
                           reinterpret_cast<const unsigned char*>(sealed->data()), sealed->size(),
                           public_key_, secret) != 0) {
    sodium_memzero(clear.data(), clear.size());
    return internal_error(who(op) +
                          ": sealed_value does not open with orgd's key (sealed to another key?)");
  }
  return Secret::take(std::move(clear));
}

Error RemoteClient::malformed_reply(const std::string& op, const std::string& what) {
  ++malformed_;
  // The answer was counted as one when it decoded; it is not.
  --answered_;
  Error e = internal_error(who(op) + ": malformed reply: " + what);
  fail(e);
  return e;
}

ClientStats RemoteClient::stats() const {
  return {requests_.load(), answered_.load(), error_replies_.load(), malformed_.load(),
          unanswered_.load()};
}

std::string RemoteClient::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace orgd::remote
