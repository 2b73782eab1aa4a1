#pragma once

// The provider-level settings of `providers.<name>: {type: github, ...}` (DESIGN.md §8), parsed
// and validated once; the client, the auth and the webhook intake take this struct, never YAML.

#include <chrono>
#include <optional>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"

namespace orgd::github {

// A GitHub App's installation, instead of a token.
struct AppSettings {
  // The App's client ID ("Iv23li...", what GitHub recommends as the JWT's issuer) or its numeric
  // application ID; either is accepted as `iss`.
  std::string id;
  std::string installation_id;   // digits
  std::string private_key_file;  // the App's PEM private key (RSA)
};

struct Settings {
  std::string name;  // the provider instance (providers.<name>)
  // No trailing slash. https://, or http:// to a loopback host (tests against a plain fake).
  std::string api_url = "https://api.github.com";
  // Exactly one of these two.
  std::optional<std::string> token_env;
  std::optional<AppSettings> app;
  std::string owner;    // the org or user the repos belong to; default: the org name
  std::string ca_file;  // an extra CA bundle (tests)
  std::string webhook_secret_env = "GITHUB_WEBHOOK_SECRET";
  // How long GITHUB_EVENTS remembers a delivery's id, so a redelivery within it is kept once.
  Duration webhook_dedup_window = std::chrono::hours{24};
  std::string api_version = "2022-11-28";  // the X-GitHub-Api-Version header
};

// The longest webhook_dedup_window accepted: GITHUB_EVENTS keeps deliveries this long, and
// JetStream's duplicate window cannot exceed the stream's max age.
inline constexpr std::chrono::hours kMaxDedupWindow{24 * 7};

// Reads and checks `providers.<config.name>`; `default_owner` is the org name (empty when the
// caller does not know it: then owner stays empty unless the settings name one). Throws
// ConfigError with every problem, each "<file>:<line>: providers.<name>.<key>: <problem>".
Settings parse_settings(const ProviderConfig& config, const std::string& source_file,
                        const std::string& default_owner);

}  // namespace orgd::github
