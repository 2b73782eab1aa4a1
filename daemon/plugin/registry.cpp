#include "daemon/plugin/registry.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <utility>

namespace orgd {

namespace {

std::string where(const std::string& source_file, int line) {
  return line > 0 ? source_file + ":" + std::to_string(line) : source_file;
}

}  // namespace

std::vector<std::string> Capabilities::names() const {
  std::vector<std::string> out;
  if (deploy_target) out.emplace_back("deploy_target");
  if (secret_target) out.emplace_back("secret_target");
  if (credential_issuer) out.emplace_back("credential_issuer");
  if (health_probe) out.emplace_back("health_probe");
  if (object_store) out.emplace_back("object_store");
  return out;
}

std::unique_ptr<ObjectStore> Provider::make_object_store(const ObjectStoreConfig& config,
                                                         const std::string& source_file) {
  throw ConfigError({fmt::format("{}: secrets.backup.r2: provider {} ({}) has no object store",
                                 where(source_file, config.line), name(), type())});
}

std::unique_ptr<DeployTarget> Provider::make_deploy_target(const DeployTargetConfig& target,
                                                           const std::string& source_file) {
  throw ConfigError({fmt::format("{}: deploy.{}.provider: provider {} ({}) has no deploy targets",
                                 where(source_file, target.line), target.env, name(), type())});
}

std::unique_ptr<SecretTarget> Provider::make_secret_target(const SecretTargetConfig& target,
                                                           const std::string& source_file) {
  throw ConfigError({fmt::format(
      "{}: repos.{}.secret_targets[{}].provider: provider {} ({}) has no secret targets",
      where(source_file, target.line), target.repo, target.index, name(), type())});
}

void ProviderRegistry::add_factory(std::string type, Factory factory) {
  factories_[std::move(type)] = std::move(factory);
}

bool ProviderRegistry::supports(const std::string& type) const {
  return factories_.count(type) != 0;
}

std::unique_ptr<Provider> ProviderRegistry::create(const ProviderConfig& config,
                                                   const ProviderEnvironment& env,
                                                   const std::string& source_file) const {
  const auto it = factories_.find(config.type);
  if (it == factories_.end()) {
    const bool planned = config.type == "github" || config.type == "cloudflare" ||
                         config.type == "remote";
    std::string built;
    for (const auto& [type, factory] : factories_) built += (built.empty() ? "" : ", ") + type;
    throw ConfigError({where(source_file, config.line) + ": providers." + config.name +
                       ": type '" + config.type + "' " +
                       (planned ? "is not built yet" : "is unknown") + " (built: " + built + ")"});
  }
  return it->second(config, services_for(config, env), source_file);
}

// A secret target of a repo or of the org, built by its provider; null (reported) when the
// provider has no secret targets or refuses the settings.
std::shared_ptr<SecretTarget> ProviderSet::build_secret_target(const ProviderSet& set,
                                                               const std::string& source,
                                                               const SecretTargetConfig& target,
                                                               std::vector<std::string>& problems) {
  Provider* provider = set.find(target.provider);
  if (provider == nullptr) return nullptr;
  const std::string path =
      target.organization
          ? fmt::format("secrets.org_targets[{}]", target.index)
          : fmt::format("repos.{}.secret_targets[{}]", target.repo, target.index);
  if (!provider->capabilities().secret_target) {
    problems.push_back(fmt::format(
        "{}: {}.provider: provider {} ({}) has no secret targets (it offers: {})",
        where(source, target.line), path, provider->name(), provider->type(),
        fmt::join(provider->capabilities().names(), ", ")));
    return nullptr;
  }
  try {
    return provider->make_secret_target(target, source);
  } catch (const ConfigError& e) {
    problems.insert(problems.end(), e.problems().begin(), e.problems().end());
    return nullptr;
  }
}

std::shared_ptr<ProviderSet> ProviderSet::build(const Config& config,
                                                const ProviderRegistry& registry,
                                                const ProviderEnvironment& env) {
  std::vector<std::string> problems;
  auto set = build(config, registry, env, problems);
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return set;
}

std::shared_ptr<ProviderSet> ProviderSet::build(const Config& config,
                                                const ProviderRegistry& registry,
                                                const ProviderEnvironment& env,
                                                std::vector<std::string>& problems) {
  auto set = std::make_shared<ProviderSet>();
  for (const auto& [name, provider_config] : config.providers) {
    try {
      set->providers_.push_back(registry.create(provider_config, env, config.source));
      set->by_name_[name] = set->providers_.back().get();
    } catch (const ConfigError& e) {
      problems.insert(problems.end(), e.problems().begin(), e.problems().end());
    }
  }
  // What each target needs of its provider; a provider that failed to build is reported above.
  for (const auto& [repo_name, repo] : config.repos) {
    for (const auto& [env_name, target] : repo.deploy) {
      const Provider* provider = set->find(target.provider);
      if (provider == nullptr || provider->capabilities().deploy_target) continue;
      problems.push_back(fmt::format(
          "{}: repos.{}.deploy.{}.provider: provider {} ({}) has no deploy targets (it offers: "
          "{})",
          where(config.source, target.line), repo_name, env_name, provider->name(),
          provider->type(), fmt::join(provider->capabilities().names(), ", ")));
    }
    for (const auto& target : repo.secret_targets) {
      if (auto built = build_secret_target(*set, config.source, target, problems)) {
        set->secret_targets_[repo_name].push_back(std::move(built));
      }
    }
  }
  for (const auto& target : config.secrets.org_targets) {
    if (auto built = build_secret_target(*set, config.source, target, problems)) {
      set->org_secret_targets_.push_back(std::move(built));
    }
  }
  for (const auto& [name, policy] : config.secrets.rotation) {
    const Provider* provider = policy.issuer.empty() ? nullptr : set->find(policy.issuer);
    if (provider == nullptr || provider->capabilities().credential_issuer) continue;
    problems.push_back(fmt::format(
        "{}: secrets.rotation.{}.issuer: provider {} ({}) issues no credentials (it offers: {})",
        where(config.source, policy.line), name, provider->name(), provider->type(),
        fmt::join(provider->capabilities().names(), ", ")));
  }
  if (const auto& r2 = config.secrets.backup.r2; r2.enabled) {
    set->backup_store_ = build_backup_store(*set, config, problems);
  }
  return set;
}

std::shared_ptr<ObjectStore> ProviderSet::build_backup_store(const ProviderSet& set,
                                                             const Config& config,
                                                             std::vector<std::string>& problems) {
  const auto& r2 = config.secrets.backup.r2;
  const std::string at = where(config.source, r2.line);
  Provider* provider = nullptr;
  if (!r2.provider.empty()) {
    provider = set.find(r2.provider);
    if (provider == nullptr) return nullptr;  // reported where it failed to build
    if (!provider->capabilities().object_store) {
      problems.push_back(fmt::format(
          "{}: secrets.backup.r2.provider: provider {} ({}) has no object store (it offers: {})",
          at, provider->name(), provider->type(),
          fmt::join(provider->capabilities().names(), ", ")));
      return nullptr;
    }
  } else {
    std::vector<std::string> offering;
    for (const auto& p : set.providers_) {
      if (p->capabilities().object_store) {
        offering.push_back(p->name());
        provider = p.get();
      }
    }
    if (offering.size() != 1) {
      problems.push_back(
          offering.empty()
              ? fmt::format("{}: secrets.backup.r2: no provider offers an object store (declare "
                            "a cloudflare provider)",
                            at)
              : fmt::format("{}: secrets.backup.r2.provider: required when several providers "
                            "offer an object store ({})",
                            at, fmt::join(offering, ", ")));
      return nullptr;
    }
  }
  try {
    return provider->make_object_store(ObjectStoreConfig{r2.bucket, r2.prefix, r2.line},
                                       config.source);
  } catch (const ConfigError& e) {
    problems.insert(problems.end(), e.problems().begin(), e.problems().end());
    return nullptr;
  }
}

const std::vector<std::shared_ptr<SecretTarget>>& ProviderSet::secret_targets(
    const std::string& repo) const {
  static const std::vector<std::shared_ptr<SecretTarget>> none;
  const auto it = secret_targets_.find(repo);
  return it == secret_targets_.end() ? none : it->second;
}

const std::vector<std::shared_ptr<SecretTarget>>& ProviderSet::org_secret_targets() const {
  return org_secret_targets_;
}

Provider* ProviderSet::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace orgd
