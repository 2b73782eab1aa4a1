#pragma once

// What a provider is given instead of globals (DESIGN.md §8): the daemon's clock, where its
// credentials come from, its HTTP transport, a NATS requester, a named logger and a state
// directory. The daemon offers them once (ProviderEnvironment); each provider instance gets its
// own ProviderServices from them.

#include <spdlog/logger.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret_source.hpp"
#include "daemon/net/http_transport.hpp"

namespace orgd {

// Request-reply over NATS, for providers served by another process (P.plugin.<name>.<op>).
class NatsRequester {
 public:
  virtual ~NatsRequester() = default;
  // The reply's payload; unavailable while orgd is not connected, or when nobody answers in
  // time.
  virtual Result<std::string> request(const std::string& subject, std::string_view payload,
                                      Duration timeout) = 0;
};

// The requester of an orgd without NATS (check-config, tests): always unavailable.
class UnconnectedNatsRequester final : public NatsRequester {
 public:
  Result<std::string> request(const std::string& subject, std::string_view,
                              Duration) override {
    return unavailable("not connected to NATS (request on " + subject + ")");
  }
};

// A secret value with its name, as the vault resolves it for a repo.
struct NamedSecret {
  std::string name;
  Secret value;
};

// The vault's answer to "what are this repo's secrets?" (DESIGN.md §8: an exec target's command
// gets them in its environment): each of repos.<repo>.secrets, the repo's own value else the
// org's. Values leave the vault only through this, in Secret memory.
class RepoSecrets {
 public:
  virtual ~RepoSecrets() = default;
  // not_found naming the secret when one of the repo's names has no value; unavailable when
  // the vault cannot be read.
  virtual Result<std::vector<NamedSecret>> secrets_for(const std::string& repo) = 0;
};

// What the daemon offers every provider.
struct ProviderEnvironment {
  std::string data_dir;
  std::shared_ptr<const Clock> clock = std::make_shared<SystemClock>();
  // orgd's environment (injected: tests stay hermetic). Providers take from it only what their
  // settings name, through their SecretSource or, for an exec target's `env:`, by name; children
  // never inherit it whole.
  Environment environment{};
  // Builds a provider's HTTP client; unset where orgd makes no HTTP calls (then a provider that
  // needs one is a config error).
  HttpTransportFactory http;
  // Null: an UnconnectedNatsRequester.
  std::shared_ptr<NatsRequester> nats;
  std::string org;  // `org:` of the config (a provider's default owner, account, ...)
  // Null when orgd has no vault (no secrets configured): repos then get no secrets.
  std::shared_ptr<RepoSecrets> repo_secrets;
  // The subject prefix P (DESIGN.md §4); empty: "org.<org>".
  std::string subject_prefix;
};

// What one provider instance is given.
struct ProviderServices {
  std::string name;  // providers.<name>
  std::string type;
  std::string org;   // `org:` of the config
  std::shared_ptr<const Clock> clock;
  // Credentials by the env var or file a setting names (token_env, private_key_file).
  std::shared_ptr<const SecretSource> secrets;
  // orgd's environment, for settings that name variables to pass on (an exec target's `env:`).
  Environment environment;
  HttpTransportFactory http;
  std::shared_ptr<NatsRequester> nats;
  // The vault's view of repos' secrets; null without a vault.
  std::shared_ptr<RepoSecrets> repo_secrets;
  std::shared_ptr<spdlog::logger> log;  // "provider.<name>"
  // <data_dir>/<type>: files that outlive orgd (release records, markers); empty when orgd has
  // no data directory. Created by the provider when it first writes.
  std::string state_dir;
  std::string data_dir;
  // The subject prefix P (DESIGN.md §4): what a remote provider's default subject starts with.
  std::string subject_prefix;

  // The provider's HTTP client with `options` (options.provider is set to the name); a
  // permanent error when orgd offers none.
  Result<std::shared_ptr<HttpTransport>> make_http(HttpClientOptions options) const;
};

ProviderServices services_for(const ProviderConfig& config, const ProviderEnvironment& env);

}  // namespace orgd
