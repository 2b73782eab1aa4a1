#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"

namespace orgd {

// Turns `providers.<name>` entries into Provider instances, from one explicit list of factories
// by type (no static self-registration: the linker drops those silently in a static library).
class ProviderRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Provider>(
      const ProviderConfig&, const ProviderServices&, const std::string& source_file)>;

  // The built-in providers. Defined with their list in plugins/builtin_providers.cpp (library
  // orgd_providers): the providers depend on this header, so it cannot depend on them.
  ProviderRegistry();

  // Adds or replaces the factory of a type (tests).
  void add_factory(std::string type, Factory factory);

  bool supports(const std::string& type) const;

  // Throws ConfigError for a type without a factory, and for invalid provider settings.
  std::unique_ptr<Provider> create(const ProviderConfig& config, const ProviderEnvironment& env,
                                   const std::string& source_file) const;

 private:
  std::map<std::string, Factory> factories_;
};

// Every provider instance of a config, by name, built once per config; what the orchestrator,
// the secrets engine and the operators' view take their providers from.
class ProviderSet {
 public:
  // Builds every provider, then checks that each target names a provider with the capability
  // it needs (a deploy target a provider without deploy targets, ...): one ConfigError with
  // every problem, each naming file:line.
  static std::shared_ptr<ProviderSet> build(const Config& config, const ProviderRegistry& registry,
                                            const ProviderEnvironment& env);
  // The same, adding the problems to `problems` instead of throwing them (what built is kept),
  // so a caller can report them with its own.
  static std::shared_ptr<ProviderSet> build(const Config& config, const ProviderRegistry& registry,
                                            const ProviderEnvironment& env,
                                            std::vector<std::string>& problems);

  // Null when there is no provider of that name.
  Provider* find(const std::string& name) const;
  const std::vector<std::unique_ptr<Provider>>& all() const { return providers_; }
  // A repo's secret targets (repos.<repo>.secret_targets), in config order, built and validated
  // with the providers.
  const std::vector<std::shared_ptr<SecretTarget>>& secret_targets(const std::string& repo) const;
  // The org's (secrets.org_targets), in config order: org_secret_targets()[i] is
  // config.secrets.org_targets[i] when every one built.
  const std::vector<std::shared_ptr<SecretTarget>>& org_secret_targets() const;
  // Where secrets.backup.r2 writes the backups: the store of its provider (named, or the one
  // provider offering an object store); null when the config has no secrets.backup.r2.
  const std::shared_ptr<ObjectStore>& backup_store() const { return backup_store_; }

 private:
  static std::shared_ptr<SecretTarget> build_secret_target(const ProviderSet& set,
                                                           const std::string& source,
                                                           const SecretTargetConfig& target,
                                                           std::vector<std::string>& problems);
  static std::shared_ptr<ObjectStore> build_backup_store(const ProviderSet& set,
                                                         const Config& config,
                                                         std::vector<std::string>& problems);

  std::vector<std::unique_ptr<Provider>> providers_;
  std::map<std::string, Provider*> by_name_;
  std::map<std::string, std::vector<std::shared_ptr<SecretTarget>>> secret_targets_;
  std::vector<std::shared_ptr<SecretTarget>> org_secret_targets_;
  std::shared_ptr<ObjectStore> backup_store_;
};

}  // namespace orgd
