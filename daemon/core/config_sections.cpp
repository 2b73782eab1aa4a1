#include "daemon/core/config_sections.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/config_values.hpp"
#include "daemon/core/dependency_cycle.hpp"

namespace orgd {
namespace {

constexpr auto kTopKeys = std::to_array<std::string_view>(
    {"org", "nats", "http", "log", "providers", "repos", "secrets", "deploy"});
constexpr auto kDeployKeys =
    std::to_array<std::string_view>({"parallel", "max_active", "on_failure", "lease_ttl", "history",
                                     "step_timeout", "retries", "retry_backoff", "health_gate"});
constexpr auto kHealthGateKeys = std::to_array<std::string_view>({"enabled", "timeout", "soak"});
constexpr auto kFailurePolicies = std::to_array<std::string_view>({"stop", "rollback"});
constexpr auto kNatsKeys = std::to_array<std::string_view>(
    {"embedded", "urls", "data_dir", "server_binary", "server_include", "creds_file", "nkey_file", "token",
     "token_env", "user", "password_env", "jwt_env", "nkey_seed_env", "tls", "subject_prefix",
     "replicas", "connect_timeout", "reconnect_wait", "max_payload"});
constexpr auto kTlsKeys = std::to_array<std::string_view>({"ca_file", "cert_file", "key_file"});
constexpr auto kHttpKeys = std::to_array<std::string_view>(
    {"listen", "enabled", "body_limit", "header_timeout", "read_timeout", "write_timeout"});
constexpr auto kLogKeys = std::to_array<std::string_view>({"level", "format"});
constexpr auto kRepoKeys =
    std::to_array<std::string_view>({"depends_on", "deploy", "secrets", "secret_targets", "health"});
constexpr auto kHealthKeys = std::to_array<std::string_view>({"services", "ttl"});
constexpr auto kSecretsKeys = std::to_array<std::string_view>(
    {"master_key_file", "master_key_env", "passphrase_env", "sources", "org_targets",
     "sync_interval", "rotation", "backup"});
constexpr auto kSecretSourceKeys = std::to_array<std::string_view>({"file", "scope"});
constexpr auto kRotationKeys =
    std::to_array<std::string_view>({"max_age", "generate", "issuer", "overlap"});
constexpr auto kGenerateKeys = std::to_array<std::string_view>({"length", "alphabet"});
constexpr auto kBackupKeys = std::to_array<std::string_view>({"dir", "interval", "keep", "r2"});
constexpr auto kBackupStoreKeys = std::to_array<std::string_view>({"provider", "bucket", "prefix"});
constexpr auto kLogLevels =
    std::to_array<std::string_view>({"trace", "debug", "info", "warn", "error", "critical", "off"});
constexpr auto kLogFormats = std::to_array<std::string_view>({"text", "json"});
constexpr auto kProviderTypes =
    std::to_array<std::string_view>({"github", "cloudflare", "synadia", "exec", "local", "remote"});

// A dependency as written, checked once every repo is known.
struct PendingDependency {
  std::string repo;
  std::string dependency;
  std::string path;
  int line = 0;
};

// Walks the sections of one document, reporting to the schema reader as it goes.
class SectionReader {
 public:
  SectionReader(SchemaReader& schema, ConfigSections::Lines& lines)
      : schema_(schema), lines_(lines) {}

  void load_root(const YAML::Node& root, Config& config) {
    auto entries = schema_.mapping(root, "", 1, kTopKeys);
    if (!entries) return;
    auto find = [&](std::string_view key) -> const SchemaEntry* {
      for (const auto& e : *entries) {
        if (e.key == key) return &e;
      }
      return nullptr;
    };
    // Providers before repos, whatever the order in the file: targets name providers.
    if (const SchemaEntry* e = find("org")) load_org(*e, config);
    if (const SchemaEntry* e = find("nats")) load_nats(*e, config.nats);
    if (const SchemaEntry* e = find("http")) load_http(*e, config.http);
    if (const SchemaEntry* e = find("log")) load_log(*e, config.log);
    if (const SchemaEntry* e = find("deploy")) load_deploy_settings(*e, config.deploy);
    if (const SchemaEntry* e = find("providers")) load_providers(*e, config.providers);
    if (const SchemaEntry* e = find("repos")) load_repos(*e, config);
    // After repos and providers: sources name repos, targets and issuers name providers.
    if (const SchemaEntry* e = find("secrets")) load_secrets(*e, config);
  }

 private:

  void load_org(const SchemaEntry& e, Config& config) {
    auto text = schema_.scalar(e, "a string");
    if (!text) return;
    if (!valid_org(*text)) {
      schema_.report(
          e.value_line, e.path,
          fmt::format("invalid org {} (expected lower-case letters, digits and '-', starting "
                      "with a letter or digit, at most {} characters)",
                      quoted(*text), kMaxOrgLength));
      return;
    }
    config.org = std::move(*text);
  }

  void load_nats(const SchemaEntry& section, NatsConfig& nats) {
    lines_.nats = section.line;
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kNatsKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      const std::string& k = e.key;
      if (k == "embedded") {
        schema_.read_bool(e, nats.embedded);
      } else if (k == "urls") {
        load_urls(e, nats.urls);
      } else if (k == "data_dir") {
        schema_.read_string(e, nats.data_dir, false);
      } else if (k == "server_binary") {
        schema_.read_string(e, nats.server_binary, false);
      } else if (k == "server_include") {
        schema_.read_string(e, nats.server_include);
      } else if (k == "creds_file") {
        schema_.read_string(e, nats.creds_file);
      } else if (k == "nkey_file") {
        schema_.read_string(e, nats.nkey_file);
      } else if (k == "token") {
        schema_.read_string(e, nats.token);
      } else if (k == "token_env") {
        schema_.read_string(e, nats.token_env);
      } else if (k == "user") {
        schema_.read_string(e, nats.user);
      } else if (k == "password_env") {
        schema_.read_string(e, nats.password_env);
      } else if (k == "jwt_env") {
        schema_.read_string(e, nats.jwt_env);
      } else if (k == "nkey_seed_env") {
        schema_.read_string(e, nats.nkey_seed_env);
      } else if (k == "tls") {
        load_tls(e, nats.tls);
      } else if (k == "subject_prefix") {
        load_subject_prefix(e, nats.subject_prefix);
      } else if (k == "replicas") {
        schema_.read_int(e, 1, 5, nats.replicas);
      } else if (k == "connect_timeout") {
        schema_.read_duration(e, false, nats.connect_timeout);
      } else if (k == "reconnect_wait") {
        schema_.read_duration(e, true, nats.reconnect_wait);
      } else if (k == "max_payload") {
        schema_.read_bytes(e, 1024, 8 * 1024 * 1024, nats.max_payload);
      }
    }
  }

  void load_urls(const SchemaEntry& e, std::vector<std::string>& out) {
    std::vector<std::pair<std::string, int>> items;
    if (e.value.IsScalar()) {
      for (auto& url : split_urls(e.value.Scalar()))
        items.emplace_back(std::move(url), e.value_line);
    } else if (e.value.IsSequence()) {
      items = schema_.read_list(e);
    } else {
      schema_.report(
          e.value_line, e.path,
          "expected a list of URLs or a comma-separated string, got " + kind_of(e.value));
      return;
    }
    std::vector<std::string> urls;
    bool ok = true;
    for (auto& [url, line] : items) {
      const std::string text{trim(url)};
      if (auto problem = url_problem(text)) {
        schema_.report(line, e.path, *problem);
        ok = false;
      } else {
        urls.push_back(text);
      }
    }
    if (ok && urls.empty()) {
      schema_.report(e.value_line, e.path, "needs at least one URL");
      return;
    }
    if (ok) out = std::move(urls);
  }

  void load_tls(const SchemaEntry& section, TlsConfig& tls) {
    lines_.tls = section.line;
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kTlsKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "ca_file") schema_.read_string(e, tls.ca_file);
      if (e.key == "cert_file") schema_.read_string(e, tls.cert_file);
      if (e.key == "key_file") schema_.read_string(e, tls.key_file);
    }
  }

  void load_subject_prefix(const SchemaEntry& e, std::string& out) {
    auto text = schema_.scalar(e, "a string");
    if (!text) return;
    if (auto problem = subject_problem(*text)) {
      schema_.report(e.value_line, e.path,
                     fmt::format("invalid subject prefix {}: {}", quoted(*text), *problem));
      return;
    }
    out = std::move(*text);
  }

  void load_http(const SchemaEntry& section, HttpConfig& http) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kHttpKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "listen") {
        auto text = schema_.scalar(e, "a string host:port");
        if (!text) continue;
        std::string host;
        std::uint16_t port = 0;
        if (auto problem = listen_problem(*text, host, port)) {
          schema_.report(e.value_line, e.path,
                         fmt::format("invalid listen address {}: {}", quoted(*text), *problem));
        } else {
          http.host = std::move(host);
          http.port = port;
        }
      } else if (e.key == "enabled") {
        schema_.read_bool(e, http.enabled);
      } else if (e.key == "body_limit") {
        schema_.read_bytes(e, 1024, std::int64_t{256} * 1024 * 1024, http.body_limit);
      } else if (e.key == "header_timeout") {
        schema_.read_duration(e, false, http.header_timeout);
      } else if (e.key == "read_timeout") {
        schema_.read_duration(e, false, http.read_timeout);
      } else if (e.key == "write_timeout") {
        schema_.read_duration(e, false, http.write_timeout);
      }
    }
  }

  void load_log(const SchemaEntry& section, LogConfig& log) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kLogKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "level") schema_.read_choice(e, kLogLevels, log.level);
      if (e.key == "format") schema_.read_choice(e, kLogFormats, log.format);
    }
  }

  void load_secrets(const SchemaEntry& section, Config& config) {
    SecretsConfig& secrets = config.secrets;
    lines_.secrets = section.line;
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kSecretsKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "master_key_file") schema_.read_string(e, secrets.master_key_file, false);
      if (e.key == "master_key_env") schema_.read_string(e, secrets.master_key_env, false);
      if (e.key == "passphrase_env") schema_.read_string(e, secrets.passphrase_env, false);
      if (e.key == "sources") load_secret_sources(e, config);
      if (e.key == "org_targets") load_org_targets(e, secrets);
      if (e.key == "sync_interval") schema_.read_duration(e, true, secrets.sync_interval);
      if (e.key == "rotation") load_rotation(e, secrets);
      if (e.key == "backup") load_backup(e, secrets.backup);
    }
  }

  void load_secret_sources(const SchemaEntry& section, Config& config) {
    if (section.value.IsNull()) return;
    if (!section.value.IsSequence()) {
      schema_.report(section.value_line, section.path,
                     "expected a list of sources ({file: <path>, scope: org|<repo>}), got " +
                         kind_of(section.value));
      return;
    }
    int index = 0;
    for (const YAML::Node& item : section.value) {
      const std::string path = fmt::format("{}[{}]", section.path, index++);
      SecretSourceConfig source;
      source.line = line_of(item, section.value_line);
      auto fields = schema_.mapping(item, path, source.line, kSecretSourceKeys);
      if (!fields) continue;
      bool has_scope = false;
      for (const SchemaEntry& f : *fields) {
        if (f.key == "file") schema_.read_string(f, source.file, false);
        if (f.key == "scope") {
          has_scope = true;
          schema_.read_string(f, source.scope, false);
          if (!source.scope.empty() && source.scope != "org" &&
              config.repos.count(source.scope) == 0) {
            schema_.report(f.value_line, f.path,
                           fmt::format("unknown repo {} (a scope is org or a repo under repos:)",
                                       quoted(source.scope)));
          }
        }
      }
      if (source.file.empty()) {
        schema_.report(source.line, path + ".file", "required key missing (the .env file)");
        continue;
      }
      if (!has_scope) {
        schema_.report(source.line, path + ".scope", "required key missing (org or a repo)");
        continue;
      }
      config.secrets.sources.push_back(std::move(source));
    }
  }

  void load_org_targets(const SchemaEntry& section, SecretsConfig& secrets) {
    if (section.value.IsNull()) return;
    if (!section.value.IsSequence()) {
      schema_.report(section.value_line, section.path,
                     "expected a list of targets ({provider: <name>, names: [...]}), got " +
                         kind_of(section.value));
      return;
    }
    int index = 0;
    for (const YAML::Node& item : section.value) {
      const std::string path = fmt::format("{}[{}]", section.path, index);
      SecretTargetConfig target;
      target.organization = true;
      target.index = index++;
      target.line = line_of(item, section.value_line);
      if (!read_secret_target(item, path, target)) continue;
      if (target.names.empty()) {
        schema_.report(target.line, path + ".names",
                       "required key missing (the org secrets this target gets)");
        continue;
      }
      secrets.org_targets.push_back(std::move(target));
    }
  }

  // provider (declared), prune and names of a secret target; false (reported) when unusable.
  bool read_secret_target(const YAML::Node& item, const std::string& path,
                          SecretTargetConfig& target) {
    auto fields = schema_.mapping(item, path, target.line, Words{});
    if (!fields) return false;
    const auto provider = std::find_if(fields->begin(), fields->end(),
                                       [](const SchemaEntry& e) { return e.key == "provider"; });
    if (provider == fields->end()) {
      schema_.report(target.line, path + ".provider",
                     "required key missing (the name of a provider)");
      return false;
    }
    schema_.read_string(*provider, target.provider);
    if (target.provider.empty()) {
      if (provider->value.IsScalar())
        schema_.report(provider->value_line, provider->path, "must not be empty");
      return false;
    }
    if (declared_providers_.count(target.provider) == 0) {
      schema_.report(provider->value_line, provider->path,
                     fmt::format("unknown provider {} (declare it under providers:)",
                                 quoted(target.provider)));
      return false;
    }
    for (const SchemaEntry& f : *fields) {
      if (f.key == "prune") schema_.read_bool(f, target.prune);
      if (f.key == "names") target.names = schema_.read_names(f, "secret");
    }
    target.settings = item;  // the provider's reader skips provider, prune and names
    return true;
  }

  void load_rotation(const SchemaEntry& section, SecretsConfig& secrets) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, Words{});
    if (!entries) return;
    for (const SchemaEntry& r : *entries) {
      if (!valid_name(r.key)) {
        schema_.report(r.line, r.path, "invalid secret name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      RotationPolicyConfig policy;
      policy.name = r.key;
      policy.line = r.line;
      auto fields = schema_.mapping(r.value, r.path, r.value_line, kRotationKeys);
      if (!fields) continue;
      bool generate = false;
      for (const SchemaEntry& f : *fields) {
        if (f.key == "max_age") schema_.read_duration(f, true, policy.max_age);
        if (f.key == "overlap") schema_.read_duration(f, true, policy.overlap);
        if (f.key == "issuer") {
          schema_.read_string(f, policy.issuer, false);
          if (!policy.issuer.empty() && declared_providers_.count(policy.issuer) == 0) {
            schema_.report(f.value_line, f.path,
                           fmt::format("unknown provider {} (declare it under providers:)",
                                       quoted(policy.issuer)));
          }
        }
        if (f.key == "generate") {
          generate = true;
          load_generator(f, policy);
        }
      }
      if (generate == !policy.issuer.empty()) {
        schema_.report(r.line, r.path,
                       "set exactly one of generate ({length, alphabet}) and issuer (a provider)");
      }
      secrets.rotation.emplace(policy.name, std::move(policy));
    }
  }

  void load_generator(const SchemaEntry& section, RotationPolicyConfig& policy) {
    auto fields = schema_.mapping(section.value, section.path, section.value_line, kGenerateKeys);
    if (!fields) return;
    for (const SchemaEntry& f : *fields) {
      if (f.key == "length") schema_.read_int(f, 16, 4096, policy.length);
      if (f.key == "alphabet") {
        schema_.read_string(f, policy.alphabet, false);
        const std::set<char> distinct(policy.alphabet.begin(), policy.alphabet.end());
        const bool named = policy.alphabet == "alphanumeric" || policy.alphabet == "hex" ||
                           policy.alphabet == "base64url";
        if (!named && distinct.size() < 16) {
          schema_.report(f.value_line, f.path,
                         "expected alphanumeric, hex, base64url, or at least 16 distinct "
                         "characters");
          policy.alphabet = "alphanumeric";
        }
      }
    }
  }

  void load_backup(const SchemaEntry& section, SecretsBackupConfig& backup) {
    auto fields = schema_.mapping(section.value, section.path, section.value_line, kBackupKeys);
    if (!fields) return;
    for (const SchemaEntry& f : *fields) {
      if (f.key == "dir") schema_.read_string(f, backup.dir, false);
      if (f.key == "interval") schema_.read_duration(f, false, backup.interval);
      if (f.key == "keep") schema_.read_int(f, 1, 10000, backup.keep);
      if (f.key == "r2") load_backup_store(f, backup.r2);
    }
  }

  void load_backup_store(const SchemaEntry& section, SecretsBackupStoreConfig& store) {
    store.line = section.line;
    auto fields =
        schema_.mapping(section.value, section.path, section.value_line, kBackupStoreKeys);
    if (!fields) return;
    store.enabled = true;
    bool has_bucket = false;
    for (const SchemaEntry& f : *fields) {
      if (f.key == "bucket") {
        has_bucket = true;
        schema_.read_string(f, store.bucket, false);
      }
      if (f.key == "prefix") schema_.read_string(f, store.prefix);
      if (f.key == "provider") {
        schema_.read_string(f, store.provider, false);
        if (!store.provider.empty() && declared_providers_.count(store.provider) == 0) {
          schema_.report(f.value_line, f.path,
                         fmt::format("unknown provider {} (declare it under providers:)",
                                     quoted(store.provider)));
        }
      }
    }
    if (!has_bucket) {
      schema_.report(section.line, section.path + ".bucket",
                     "required key missing (the bucket the backups go to)");
    }
  }

  void load_deploy_settings(const SchemaEntry& section, DeployConfig& deploy) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kDeployKeys);
    if (!entries) return;
    StepPolicyOverrides step;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "parallel") {
        schema_.read_int(e, 1, 64, deploy.parallel);
      } else if (e.key == "max_active") {
        schema_.read_int(e, 1, 256, deploy.max_active);
      } else if (e.key == "on_failure") {
        schema_.read_choice(e, kFailurePolicies, deploy.on_failure);
      } else if (e.key == "lease_ttl") {
        schema_.read_duration(e, false, deploy.lease_ttl);
        if (deploy.lease_ttl < std::chrono::seconds{1}) {
          schema_.report(e.value_line, e.path, "must be at least 1s");
          deploy.lease_ttl = std::chrono::seconds{1};
        }
      } else if (e.key == "history") {
        schema_.read_duration(e, false, deploy.history);
      } else {
        read_step_override(e, step);
      }
    }
    deploy.step = step.apply(deploy.step);
  }

  // step_timeout, retries, retry_backoff and health_gate, in deploy: or in a target; other keys
  // are left alone.
  void read_step_override(const SchemaEntry& e, StepPolicyOverrides& out) {
    if (e.key == "step_timeout") {
      Duration value{};
      schema_.read_duration(e, false, value);
      if (value.count() > 0) out.step_timeout = value;
    } else if (e.key == "retries") {
      int value = -1;
      schema_.read_int(e, 0, 10, value);
      if (value >= 0) out.retries = value;
    } else if (e.key == "retry_backoff") {
      Duration value{-1};
      schema_.read_duration(e, true, value);
      if (value.count() >= 0) out.retry_backoff = value;
    } else if (e.key == "health_gate") {
      // `health_gate: false` turns the gate off; a map sets its parts and turns it on (also
      // where deploy: turned it off), unless it says `enabled: false`: whoever writes
      // `health_gate: {soak: 5s}` means a gate that soaks for 5s.
      if (e.value.IsScalar()) {
        bool enabled = true;
        schema_.read_bool(e, enabled);
        out.health_gate_enabled = enabled;
        return;
      }
      auto fields = schema_.mapping(e.value, e.path, e.value_line, kHealthGateKeys);
      if (!fields) return;
      out.health_gate_enabled = true;
      for (const SchemaEntry& f : *fields) {
        if (f.key == "enabled") {
          bool enabled = true;
          schema_.read_bool(f, enabled);
          out.health_gate_enabled = enabled;
        } else {
          Duration value{-1};
          schema_.read_duration(f, f.key == "soak", value);
          if (value.count() < 0) continue;
          if (f.key == "timeout") out.health_gate_timeout = value;
          if (f.key == "soak") out.health_gate_soak = value;
        }
      }
    }
  }

  void load_providers(const SchemaEntry& section,
                      std::map<std::string, ProviderConfig>& providers) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, Words{});
    if (!entries) return;
    for (const SchemaEntry& p : *entries) {
      declared_providers_.insert(p.key);
      if (!valid_name(p.key)) {
        schema_.report(p.line, p.path, "invalid provider name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      if (p.value.IsNull()) {
        schema_.report(
            p.value_line, p.path,
            fmt::format("expected a map with a type (one of: {})", join(kProviderTypes)));
        continue;
      }
      auto fields = schema_.mapping(p.value, p.path, p.value_line, Words{});
      if (!fields) continue;
      ProviderConfig provider;
      provider.name = p.key;
      provider.line = p.line;
      const auto type = std::find_if(fields->begin(), fields->end(),
                                     [](const SchemaEntry& e) { return e.key == "type"; });
      if (type == fields->end()) {
        schema_.report(p.line, p.path + ".type",
                       fmt::format("required key missing (one of: {})", join(kProviderTypes)));
        continue;
      }
      schema_.read_choice(*type, kProviderTypes, provider.type);
      if (provider.type.empty()) continue;
      // The map as written (the provider's reader skips `type`): a copy without it would merge
      // yaml-cpp's node memory of the whole document into each new map, quadratic in its size.
      provider.settings = p.value;
      providers.emplace(p.key, std::move(provider));
    }
  }

  void load_repos(const SchemaEntry& section, Config& config) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, Words{});
    if (!entries) return;
    std::vector<PendingDependency> dependencies;
    for (const SchemaEntry& r : *entries) {
      if (!valid_name(r.key)) {
        schema_.report(r.line, r.path, "invalid repo name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      auto fields = schema_.mapping(r.value, r.path, r.value_line, kRepoKeys);
      if (!fields) continue;
      RepoConfig repo;
      repo.name = r.key;
      repo.line = r.line;
      for (const SchemaEntry& e : *fields) {
        if (e.key == "depends_on") {
          for (auto& [dependency, line] : schema_.read_list(e)) {
            if (std::find(repo.depends_on.begin(), repo.depends_on.end(), dependency) !=
                repo.depends_on.end()) {
              schema_.report(line, e.path,
                             fmt::format("repo {} is listed twice", quoted(dependency)));
              continue;
            }
            dependencies.push_back({repo.name, dependency, e.path, line});
            repo.depends_on.push_back(std::move(dependency));
          }
        } else if (e.key == "deploy") {
          load_deploy(e, repo.name, repo.deploy);
        } else if (e.key == "secrets") {
          repo.secrets = schema_.read_names(e, "secret");
        } else if (e.key == "secret_targets") {
          load_secret_targets(e, repo);
        } else if (e.key == "health") {
          load_health(e, repo.health);
        }
      }
      config.repos.emplace(repo.name, std::move(repo));
    }
    // Reported against the repos as written, so a repo whose own block had errors still counts.
    for (const auto& d : dependencies) {
      if (d.dependency == d.repo) {
        schema_.report(d.line, d.path, "a repo cannot depend on itself");
      } else if (std::none_of(entries->begin(), entries->end(),
                              [&](const SchemaEntry& e) { return e.key == d.dependency; })) {
        schema_.report(d.line, d.path, fmt::format("unknown repo {}", quoted(d.dependency)));
      }
    }
    report_cycle(config);
  }

  // Over the repos that loaded, in file order so the cycle starts at the repo written first.
  // Self-dependencies are reported above and unknown ones are ignored by find_cycle.
  void report_cycle(const Config& config) {
    std::vector<const RepoConfig*> repos;
    for (const auto& [name, repo] : config.repos) repos.push_back(&repo);
    std::stable_sort(repos.begin(), repos.end(),
                     [](const RepoConfig* a, const RepoConfig* b) { return a->line < b->line; });
    std::vector<RepoNode> nodes;
    nodes.reserve(repos.size());
    for (const RepoConfig* repo : repos) {
      RepoNode node{repo->name, {}};
      for (const auto& dependency : repo->depends_on) {
        if (dependency != repo->name) node.depends_on.push_back(dependency);
      }
      nodes.push_back(std::move(node));
    }
    const auto cycle = find_cycle(nodes);
    if (!cycle) return;
    const RepoConfig& first = config.repos.at(cycle->front());
    schema_.report(first.line, fmt::format("repos.{}.depends_on", first.name),
                   "dependency cycle: " + describe_cycle(*cycle));
  }

  void load_deploy(const SchemaEntry& section, const std::string& repo,
                   std::map<std::string, DeployTargetConfig>& targets) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, Words{});
    if (!entries) return;
    for (const SchemaEntry& t : *entries) {
      if (!valid_name(t.key)) {
        schema_.report(t.line, t.path, "invalid environment name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      if (t.value.IsNull()) {
        schema_.report(t.value_line, t.path, "expected a map with a provider");
        continue;
      }
      auto fields = schema_.mapping(t.value, t.path, t.value_line, Words{});
      if (!fields) continue;
      const auto provider = std::find_if(fields->begin(), fields->end(),
                                         [](const SchemaEntry& e) { return e.key == "provider"; });
      if (provider == fields->end()) {
        schema_.report(t.line, t.path + ".provider",
                       "required key missing (the name of a provider)");
        continue;
      }
      std::string name;
      schema_.read_string(*provider, name);
      if (name.empty()) {
        if (provider->value.IsScalar())
          schema_.report(provider->value_line, provider->path, "must not be empty");
        continue;
      }
      if (declared_providers_.count(name) == 0) {
        schema_.report(
            provider->value_line, provider->path,
            fmt::format("unknown provider {} (declare it under providers:)", quoted(name)));
        continue;
      }
      DeployTargetConfig target;
      target.repo = repo;
      target.env = t.key;
      target.provider = std::move(name);
      target.line = t.line;
      for (const SchemaEntry& f : *fields) read_step_override(f, target.policy);
      target.settings = t.value;  // the provider's reader skips the reserved keys
      targets.emplace(t.key, std::move(target));
    }
  }

  // A list of maps, each naming a declared provider; the provider reads the rest.
  void load_secret_targets(const SchemaEntry& section, RepoConfig& repo) {
    if (section.value.IsNull()) return;
    if (!section.value.IsSequence()) {
      schema_.report(section.value_line, section.path,
                     "expected a list of targets ({provider: <name>, ...}), got " +
                         kind_of(section.value));
      return;
    }
    int index = 0;
    for (const YAML::Node& item : section.value) {
      const std::string path = fmt::format("{}[{}]", section.path, index);
      const int line = line_of(item, section.value_line);
      SecretTargetConfig target;
      target.repo = repo.name;
      target.index = index++;
      target.line = line;
      if (!read_secret_target(item, path, target)) continue;
      for (const auto& name : target.names) {
        if (std::find(repo.secrets.begin(), repo.secrets.end(), name) == repo.secrets.end()) {
          schema_.report(line, path + ".names",
                         fmt::format("{} is not one of repos.{}.secrets", quoted(name), repo.name));
        }
      }
      repo.secret_targets.push_back(std::move(target));
    }
  }

  void load_health(const SchemaEntry& section, RepoHealthConfig& health) {
    auto entries = schema_.mapping(section.value, section.path, section.value_line, kHealthKeys);
    if (!entries) return;
    for (const SchemaEntry& e : *entries) {
      if (e.key == "services") health.services = schema_.read_names(e, "service");
      if (e.key == "ttl") schema_.read_duration(e, false, health.ttl);
    }
  }

  SchemaReader& schema_;
  ConfigSections::Lines& lines_;
  // Every provider name declared, valid or not, so a target naming a provider whose own block
  // had problems is not reported a second time.
  std::set<std::string> declared_providers_;
};

}  // namespace

Words ConfigSections::top_level_keys() { return kTopKeys; }

void ConfigSections::load(const YAML::Node& root, Config& config) {
  SectionReader{schema_, lines_}.load_root(root, config);
}

void ConfigSections::check_combinations(const Config& config) {
  const NatsConfig& nats = config.nats;
  if (nats.tls.cert_file.empty() != nats.tls.key_file.empty()) {
    schema_.report(lines_.tls, "nats.tls",
                   "cert_file and key_file go together (a client certificate needs its key)");
  }
  if (!nats.token.empty() && !nats.token_env.empty()) {
    schema_.report(lines_.nats, "nats", "set only one of token and token_env");
  }
  if (nats.jwt_env.empty() != nats.nkey_seed_env.empty()) {
    schema_.report(lines_.nats, "nats", "jwt_env and nkey_seed_env go together");
  }
  const SecretsConfig& secrets = config.secrets;
  const int key_sources = int{!secrets.master_key_file.empty()} +
                          int{!secrets.master_key_env.empty()} +
                          int{!secrets.passphrase_env.empty()};
  if (key_sources > 1) {
    schema_.report(lines_.secrets, "secrets",
                   "set only one of master_key_file, master_key_env and passphrase_env");
  }
  bool uses_vault = !secrets.sources.empty() || !secrets.org_targets.empty() ||
                    !secrets.rotation.empty() || secrets.backup.scheduled();
  for (const auto& [name, repo] : config.repos) {
    if (!repo.secrets.empty()) uses_vault = true;
  }
  if (uses_vault && key_sources == 0 && lines_.secrets != 0) {
    schema_.report(lines_.secrets, "secrets",
                   "the vault needs a master key: set master_key_file, master_key_env or "
                   "passphrase_env");
  }
}

}  // namespace orgd
