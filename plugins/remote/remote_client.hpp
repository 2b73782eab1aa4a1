#pragma once

// One remote provider's side of the bus: request-reply on <subject>.<op> through the daemon's
// NatsRequester, every call bounded by min(timeout, the caller's deadline), replies decoded
// (plugin_messages.hpp), and the provider's describe asked lazily and cached — providers are
// built at config load, before orgd is connected, so nothing is asked then. Every call and
// every failure is counted; the last failure is kept (no secrets: values travel sealed).
//
// Keys: the provider announces the X25519 key secret values are sealed to (PluginDescribeReply);
// orgd makes its own key pair per provider instance, when it is built, and sends the public
// half with describe and issue, so issued credentials come back sealed to orgd.

#include <google/protobuf/message.h>
#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/remote/plugin_messages.hpp"
#include "plugins/remote/remote_settings.hpp"

namespace orgd::remote {

// What describe said, checked: its capabilities cover the config's, its key is 32 bytes.
struct Described {
  std::string name;
  std::string version;
  std::vector<std::string> capabilities;
  std::string public_key;         // raw 32 bytes; empty when the provider announced none
  std::string public_key_base64;  // as announced
};

// Counts, for tests and operators.
struct ClientStats {
  long requests = 0;       // requests sent
  long answered = 0;       // replies decoded as answers
  long error_replies = 0;  // error bodies
  long malformed = 0;      // replies that were neither
  long unanswered = 0;     // timeouts, no responders, not connected, deadline passed
};

class RemoteClient {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;
  static constexpr SteadyTime kNoDeadline = SteadyTime::max();

  RemoteClient(Settings settings, std::shared_ptr<NatsRequester> nats,
               std::shared_ptr<spdlog::logger> log);
  ~RemoteClient();
  RemoteClient(const RemoteClient&) = delete;
  RemoteClient& operator=(const RemoteClient&) = delete;

  const Settings& settings() const { return settings_; }

  // Sends `request` on <subject>.<op> and decodes the answer into `reply`; waits at most
  // min(timeout, deadline - now). Errors name the provider and the op.
  Result<Ok> call(const std::string& op, const google::protobuf::Message& request,
                  google::protobuf::Message& reply, SteadyTime deadline = kNoDeadline);

  // The provider's describe, asked on first need and cached once it answers and matches the
  // declared capabilities; a failure (or a mismatch, permanent) is asked again next time.
  Result<Described> described(SteadyTime deadline = kNoDeadline);
  // Forgets the cached describe (the provider said its key changed).
  void forget_described();

  // `value` sealed to the provider's announced key, base64: what secret.put carries.
  Result<std::string> seal_for_provider(const Described& described, const Secret& value) const;
  // Opens a value the provider sealed to orgd's key (base64 of crypto_box_seal).
  Result<Secret> open_from_provider(std::string_view sealed_base64, const std::string& op) const;
  // orgd's public key for this provider, base64.
  const std::string& orgd_public_key() const { return public_key_base64_; }

  // A decoded reply whose content is wrong (a start without a handle, a status it has no name
  // for): counted as malformed, kept as the last error, returned as an internal error.
  Error malformed_reply(const std::string& op, const std::string& what);

  ClientStats stats() const;
  std::string last_error() const;
  // "remote provider <name>: <op>": what every message of this provider starts with.
  std::string who(const std::string& op) const;

 private:
  void fail(const Error& error);

  Settings settings_;
  std::shared_ptr<NatsRequester> nats_;
  std::shared_ptr<spdlog::logger> log_;
  std::string public_key_base64_;
  Secret secret_key_;  // orgd's X25519 secret key for this provider
  unsigned char public_key_[32] = {};

  std::atomic<long> requests_{0}, answered_{0}, error_replies_{0}, malformed_{0}, unanswered_{0};
  mutable std::mutex mutex_;  // guards described_ and last_error_
  std::optional<Described> described_;
  std::string last_error_;
};

// Names of the capabilities `capabilities` has that `announced` lacks.
std::vector<std::string> missing_capabilities(const Capabilities& declared,
                                              const std::vector<std::string>& announced);

}  // namespace orgd::remote
