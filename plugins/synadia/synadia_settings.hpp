#pragma once

// The settings of `providers.<name>: {type: synadia, ...}` (DESIGN.md §8, docs/synadia.md),
// parsed and validated once at load; the client, the issuer and the probe take this struct,
// never YAML.

#include <optional>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"

namespace orgd::synadia {

inline constexpr const char* kDefaultApiUrl = "https://cloud.synadia.com/api/core/beta";

struct Settings {
  std::string name;  // the provider instance (providers.<name>)
  // No trailing slash. https://, or http:// to a loopback host (tests against a plain fake).
  std::string api_url = kDefaultApiUrl;
  std::string token_env;  // the env var holding the Personal Access Token (required)
  std::string ca_file;    // an extra CA bundle (tests)
  std::string system;     // the system, by name or id (required)
  std::string account;    // the account in it, by name or id (required)
  // The signing-key group new users are made in, by name or id; empty: the account's only
  // group, else the one Synadia marks as its default.
  std::string sk_group;
  std::string user_name_prefix = "orgd";
  // The lifetime of an issued user's JWT; unset: the account's default.
  std::optional<Duration> jwt_expires_in;
  // Ensure the account exists: create it (POST) when the system has none of that name.
  bool create_account = false;
  // What the health probe connects to (nats://, tls://; empty: no connect in the probe) and
  // with which creds: an env var or a file; neither: the creds this provider issued last.
  std::string nats_url;
  std::string creds_env;
  std::string creds_file;
};

// Reads and checks `providers.<config.name>`. Throws ConfigError with every problem, each
// "<file>:<line>: providers.<name>.<key>: <problem>".
Settings parse_settings(const ProviderConfig& config, const std::string& source_file);

}  // namespace orgd::synadia
