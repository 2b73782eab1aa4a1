#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/config_values.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/yaml_schema.hpp"

namespace orgd {

struct TlsConfig {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !ca_file.empty() || !cert_file.empty(); }
};

struct NatsConfig {
  // Start a nats-server child (JetStream) listening on the first URL's host:port.
  bool embedded = false;
  std::vector<std::string> urls{"nats://127.0.0.1:4222"};
  // JetStream store of the embedded server, and orgd's own files.
  std::string data_dir = ".orgd";
  std::string server_binary = "nats-server";
  // A nats-server config fragment the embedded server includes (websocket, authorization,
  // accounts, limits): what the org's NATS controller in a container needs beyond orgd's own.
  std::string server_include;
  std::string creds_file;
  std::string nkey_file;  // a file holding a user nkey seed (SU...)
  std::string token;      // a literal token (dev only; prefer token_env)
  std::string token_env;  // the environment variable holding the token
  std::string user;
  std::string password_env;
  std::string jwt_env;        // the environment variable holding a user JWT (NATS_JWT)
  std::string nkey_seed_env;  // ... and its seed (NATS_NKEY_SEED)
  TlsConfig tls;
  // Subject prefix P; default "org.<org>".
  std::string subject_prefix;
  // Replicas of orgd's streams and buckets (1 on a single server, 3 on a cluster).
  int replicas = 1;
  Duration connect_timeout{std::chrono::seconds{5}};
  Duration reconnect_wait{std::chrono::seconds{1}};
  // Largest payload orgd accepts on any subject; larger inputs are rejected.
  std::int64_t max_payload = 256 * 1024;
};

struct HttpConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0 picks a free port
  bool enabled = true;
  std::int64_t body_limit = 1024 * 1024;
  // The request head (also an idle keep-alive connection's wait), the body, the response.
  Duration header_timeout{std::chrono::seconds{5}};
  Duration read_timeout{std::chrono::seconds{10}};
  Duration write_timeout{std::chrono::seconds{10}};

  // "host:port" as written in the config; IPv6 hosts get brackets ("[::1]:8080").
  std::string listen() const {
    const std::string port_text = std::to_string(port);
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + port_text;
    return host + ":" + port_text;
  }
};

struct LogConfig {
  std::string level = "info";   // trace, debug, info, warn, error, critical, off
  std::string format = "text";  // text | json
};

// A provider instance: providers.<name>. Settings are validated by the provider's own factory;
// only the type is checked here.
struct ProviderConfig {
  std::string name;
  std::string type;  // github|cloudflare|synadia|exec|local|remote
  YAML::Node settings;  // the map as written: the provider's settings and `type`
  int line = 0;
};

// After a step succeeds: the repo's services must report ok, newer than the step's end, for
// `soak`; otherwise the step fails after `timeout`.
struct HealthGateConfig {
  bool enabled = true;
  Duration timeout{std::chrono::minutes{5}};
  Duration soak{std::chrono::seconds{10}};
};

// How one step runs: deploy.* defaults, overridable per target.
struct StepPolicy {
  Duration step_timeout{std::chrono::minutes{30}};
  int retries = 0;
  Duration retry_backoff{std::chrono::seconds{5}};  // doubled after each retry
  HealthGateConfig health_gate;
};

// Per-target overrides of StepPolicy (keys taken out before the provider sees its settings).
struct StepPolicyOverrides {
  std::optional<Duration> step_timeout;
  std::optional<int> retries;
  std::optional<Duration> retry_backoff;
  std::optional<bool> health_gate_enabled;
  std::optional<Duration> health_gate_timeout;
  std::optional<Duration> health_gate_soak;

  StepPolicy apply(StepPolicy policy) const {
    if (step_timeout) policy.step_timeout = *step_timeout;
    if (retries) policy.retries = *retries;
    if (retry_backoff) policy.retry_backoff = *retry_backoff;
    if (health_gate_enabled) policy.health_gate.enabled = *health_gate_enabled;
    if (health_gate_timeout) policy.health_gate.timeout = *health_gate_timeout;
    if (health_gate_soak) policy.health_gate.soak = *health_gate_soak;
    return policy;
  }
};

// Keys of a deploy target that are not the provider's: `provider` and the step overrides.
inline const std::vector<std::string>& reserved_target_keys() {
  static const std::vector<std::string> keys{"provider", "step_timeout", "retries",
                                             "retry_backoff", "health_gate"};
  return keys;
}

// repos.<name>.deploy.<env>
struct DeployTargetConfig {
  std::string repo;  // the repo it deploys (the target's default repo at a provider)
  std::string env;
  std::string provider;
  // The target's map as written; the provider's settings are its keys other than
  // reserved_target_keys().
  YAML::Node settings;
  StepPolicyOverrides policy;
  int line = 0;
};

// deploy: how deploys are orchestrated.
struct DeployConfig {
  // Steps running at once within a wave.
  int parallel = 4;
  // Deploys one orgd runs at once; more wait as pending.
  int max_active = 16;
  std::string on_failure = "stop";  // stop | rollback
  // A deploy's runner renews its lease (and locks) every lease_ttl/3; when it dies, another
  // replica resumes the deploy after lease_ttl. Also the scheduler lease.
  Duration lease_ttl{std::chrono::seconds{15}};
  // Deploy records kept in orgd_deploys.
  Duration history{std::chrono::hours{24 * 30}};
  StepPolicy step;
};

// Keys of a secret target that are not the provider's.
inline const std::vector<std::string>& reserved_secret_target_keys() {
  static const std::vector<std::string> keys{"provider", "prune", "names"};
  return keys;
}

// repos.<name>.secret_targets[i] or secrets.org_targets[i] (DESIGN.md §9): where secrets are
// pushed.
struct SecretTargetConfig {
  std::string repo;           // empty for an org target
  bool organization = false;  // secrets.org_targets: the org's own secrets (GitHub org secrets)
  int index = 0;              // its place in the list
  std::string provider;
  // Delete secrets at the target that orgd did not put there (never, unless said).
  bool prune = false;
  // The names this target gets: an org target's (required), or a subset of its repo's secrets
  // (empty: all of them).
  std::vector<std::string> names;
  // The item's map as written; the provider's settings are its keys other than
  // reserved_secret_target_keys().
  YAML::Node settings;
  int line = 0;
};

struct RepoHealthConfig {
  // Services the repo's health is derived from; reported services are added to these.
  std::vector<std::string> services;
  // Default ttl of this repo's reports when a report carries none.
  Duration ttl{std::chrono::seconds{30}};
};

struct RepoConfig {
  std::string name;
  std::vector<std::string> depends_on;
  std::map<std::string, DeployTargetConfig> deploy;  // by env
  std::vector<std::string> secrets;
  std::vector<SecretTargetConfig> secret_targets;
  RepoHealthConfig health;
  int line = 0;
};

// secrets.sources[i]: a .env file imported into the vault at start and when it changes.
struct SecretSourceConfig {
  std::string file;
  std::string scope;  // "org" or a repo's name
  int line = 0;
};

// secrets.rotation.<name>: when and how a secret is replaced.
struct RotationPolicyConfig {
  std::string name;
  // Rotated when its active value is older (0: only on demand or on a rotation event).
  Duration max_age{0};
  // A random value of `length` characters from `alphabet` (a named set: alphanumeric, hex,
  // base64url; or the characters themselves), unless `issuer` names a provider whose credential
  // issuer makes it.
  int length = 32;
  std::string alphabet = "alphanumeric";
  std::string issuer;
  // How long the old value stays valid (kept, not revoked) once the new one is active.
  Duration overlap{std::chrono::hours{1}};
  int line = 0;
};

// secrets.backup.r2: the same backups in an object store (docs/r2-backups.md).
struct SecretsBackupStoreConfig {
  bool enabled = false;  // the key is there
  // The provider whose object store holds them; empty: the one provider offering one (chosen
  // when the providers are built: ProviderSet::backup_store()).
  std::string provider;
  std::string bucket;  // required
  std::string prefix = "orgd/backups/";
  int line = 0;
};

// secrets.backup: scheduled encrypted backups of the whole vault, to `dir`, to `r2`, or both.
struct SecretsBackupConfig {
  std::string dir;  // empty: no scheduled backups to files
  Duration interval{std::chrono::hours{24}};
  int keep = 14;
  SecretsBackupStoreConfig r2;

  bool scheduled() const { return !dir.empty() || r2.enabled; }
};

struct SecretsConfig {
  // The vault's master key: 32 bytes, base64, in a file or an env var; or a passphrase (env
  // var) stretched with Argon2id.
  std::string master_key_file;
  std::string master_key_env;
  std::string passphrase_env;
  std::vector<SecretSourceConfig> sources;
  std::vector<SecretTargetConfig> org_targets;
  // Scheduled reconcile on the lease holder (0: only on a change or when asked).
  Duration sync_interval{std::chrono::minutes{10}};
  std::map<std::string, RotationPolicyConfig> rotation;
  SecretsBackupConfig backup;

  bool has_master_key() const {
    return !master_key_file.empty() || !master_key_env.empty() || !passphrase_env.empty();
  }
};

struct Config {
  std::string org = "demo";
  NatsConfig nats;
  HttpConfig http;
  LogConfig log;
  std::map<std::string, ProviderConfig> providers;
  std::map<std::string, RepoConfig> repos;
  SecretsConfig secrets;
  DeployConfig deploy;
  std::string source;  // file name, or "<embedded>"

  std::string prefix() const {
    return nats.subject_prefix.empty() ? "org." + org : nats.subject_prefix;
  }
};

// A provider's reader of its settings (DESIGN.md §8: providers see this map only): a target's
// are everything in repos.<repo>.deploy.<env> but reserved_target_keys(); a provider's own are
// everything in providers.<name> but `type`. Problems name "deploy.<env>.<key>" and
// "providers.<name>.<key>".
SettingsReader target_settings(const DeployTargetConfig& target, const std::string& source_file);
SettingsReader provider_settings(const ProviderConfig& config, const std::string& source_file);
// A secret target's: its item but `provider` and `prune`; problems name
// "repos.<repo>.secret_targets[<i>].<key>".
SettingsReader secret_target_settings(const SecretTargetConfig& target,
                                      const std::string& source_file);

// Loads and validates a config. Every problem is collected and raised together as a ConfigError
// whose lines read "<file>:<line>: <key>: <problem>". Environment overrides (DESIGN.md §7) are
// applied after parsing.
Config load_config_file(const std::string& path, const Environment& env);
Config load_config_string(const std::string& text, const std::string& source_name,
                          const Environment& env);

// The embedded default (config/orgd.dev.yaml, compiled in).
const std::string& embedded_default_config();

// Where the daemon's config comes from: the file `path` names (--config, or ORGD_CONFIG in the
// environment), else the YAML held in ORGD_CONFIG_YAML (a container platform that passes
// environment variables but mounts no files), else the embedded default. The name is what
// messages call it: the path, "$ORGD_CONFIG_YAML" or "<embedded>".
std::string config_origin(const std::string& path, const Environment& env);
Config load_daemon_config(const std::string& path, const Environment& env);

}  // namespace orgd
