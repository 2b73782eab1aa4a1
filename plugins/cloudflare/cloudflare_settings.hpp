#pragma once

// The settings of `providers.<name>: {type: cloudflare, ...}` and of its targets (DESIGN.md §8,
// docs/cloudflare.md), parsed and validated once at load; the client and the targets take these
// structs, never YAML.

#include <chrono>
#include <string>
#include <vector>

#include "daemon/core/config.hpp"

namespace orgd::cloudflare {

inline constexpr const char* kDefaultApiUrl = "https://api.cloudflare.com/client/v4";

struct Settings {
  std::string name;  // the provider instance (providers.<name>)
  // No trailing slash. https://, or http:// to a loopback host (tests against a plain fake).
  std::string api_url = kDefaultApiUrl;
  std::string token_env;   // the env var holding the API token (required)
  std::string account_id;  // 32 hex digits as Cloudflare shows them (required)
  std::string ca_file;     // an extra CA bundle (tests)
  // R2's S3 endpoint; empty: derived from account_id and r2_jurisdiction.
  std::string r2_url;
  std::string r2_jurisdiction;  // "" (default) | eu | fedramp | us
};

// Reads and checks `providers.<config.name>`. Throws ConfigError with every problem, each
// "<file>:<line>: providers.<name>.<key>: <problem>".
Settings parse_settings(const ProviderConfig& config, const std::string& source_file);

// A Workers target: `script`, `dir`, `main_module`, `compatibility_date`, `steps`.
struct WorkersTarget {
  std::string script;
  std::string dir;                     // the built Worker's module files
  std::string main_module = "index.js";
  std::string compatibility_date;      // YYYY-MM-DD; empty: left to Cloudflare
  std::vector<int> steps{100};         // increasing, each 1..100, the last 100
};

// A Containers target: `application` (its id) and `image`, rolled out `rolling` in
// `step_percentage` or `steps`.
struct ContainersTarget {
  std::string application;
  std::string image;
  int step_percentage = 0;  // one of 5, 10, 20, 25, 50, 100; 0: `steps` (or 100 when neither)
  std::vector<int> steps;   // each 10..100, increasing, the last 100
  std::string kind = "full_auto";
  // How often a rollout is read while orgd waits for it (rollback waits within its call).
  std::chrono::milliseconds poll_interval{5'000};
};

struct DeployTargetSettings {
  bool containers = false;  // application + image; else a Worker
  WorkersTarget workers;
  ContainersTarget app;
};

// repos.<repo>.deploy.<env> of a cloudflare provider: a Worker (`script`, `dir`, ...) or a
// Containers application (`application` + `image`). ConfigError naming file:line:key.
DeployTargetSettings parse_deploy_target(const DeployTargetConfig& target,
                                         const std::string& source_file);

// repos.<repo>.secret_targets[i] of a cloudflare provider: `script` (the Worker).
std::string parse_secret_script(const SecretTargetConfig& target, const std::string& source_file);

// A Worker script name as Cloudflare accepts it: lower-case letters, digits, - and _, 1..63.
bool valid_script_name(const std::string& name);

}  // namespace orgd::cloudflare
