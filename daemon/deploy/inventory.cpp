#include "daemon/deploy/inventory.hpp"

#include <stdexcept>

namespace orgd::deploy {

std::shared_ptr<const Inventory> Inventory::build(const Config& config,
                                                  const ProviderRegistry& registry,
                                                  const ProviderEnvironment& environment) {
  std::vector<std::string> problems;
  auto providers = ProviderSet::build(config, registry, environment, problems);
  return build(config, std::move(providers), std::move(problems));
}

std::shared_ptr<const Inventory> Inventory::build(const Config& config,
                                                  std::shared_ptr<const ProviderSet> providers) {
  return build(config, std::move(providers), {});
}

std::shared_ptr<const Inventory> Inventory::build(const Config& config,
                                                  std::shared_ptr<const ProviderSet> providers,
                                                  std::vector<std::string> problems) {
  std::vector<RepoNode> nodes;
  for (const auto& [name, repo] : config.repos) nodes.push_back({name, repo.depends_on});
  std::shared_ptr<Inventory> inventory;
  try {
    inventory.reset(new Inventory(DeployPlanner{std::move(nodes)}));
  } catch (const std::invalid_argument& e) {
    // The config loader reports these with file and line; this covers configs built in code.
    throw ConfigError({config.source + ": repos: " + e.what()});
  }
  inventory->settings_ = config.deploy;
  inventory->providers_ = std::move(providers);
  for (const auto& [repo_name, repo] : config.repos) {
    inventory->repos_[repo_name] = true;
    for (const auto& [env, target_config] : repo.deploy) {
      Provider* provider = inventory->providers_->find(target_config.provider);
      // A provider that did not build, or without deploy targets: ProviderSet::build said so.
      if (provider == nullptr || !provider->capabilities().deploy_target) continue;
      try {
        TargetEntry entry;
        entry.provider = target_config.provider;
        entry.target = provider->make_deploy_target(target_config, config.source);
        entry.policy = target_config.policy.apply(config.deploy.step);
        inventory->targets_[repo_name][env] = std::move(entry);
      } catch (const ConfigError& e) {
        // Providers name the key from the target down ("deploy.<env>.command"); the repo
        // belongs in front of it.
        const std::string from = ": deploy." + env;
        for (std::string problem : e.problems()) {
          if (const auto at = problem.find(from); at != std::string::npos) {
            problem.replace(at, from.size(), ": repos." + repo_name + ".deploy." + env);
          }
          problems.push_back(std::move(problem));
        }
      }
    }
  }
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return inventory;
}

const TargetEntry* Inventory::target(const std::string& repo, const std::string& env) const {
  const auto repo_it = targets_.find(repo);
  if (repo_it == targets_.end()) return nullptr;
  const auto env_it = repo_it->second.find(env);
  return env_it == repo_it->second.end() ? nullptr : &env_it->second;
}

std::vector<std::string> Inventory::repos_in(const std::string& env) const {
  std::vector<std::string> repos;
  for (const auto& [repo, targets] : targets_) {
    if (targets.count(env) != 0) repos.push_back(repo);
  }
  return repos;
}

bool Inventory::has_env(const std::string& env) const {
  for (const auto& [repo, targets] : targets_) {
    if (targets.count(env) != 0) return true;
  }
  return false;
}

std::size_t Inventory::target_count() const {
  std::size_t n = 0;
  for (const auto& [repo, targets] : targets_) n += targets.size();
  return n;
}

}  // namespace orgd::deploy
