#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/deploy/planner.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"

namespace orgd::deploy {

struct TargetEntry {
  std::string provider;
  std::shared_ptr<DeployTarget> target;
  StepPolicy policy;
};

// What can be deployed where, built once per config: the dependency planner, and every
// repo+env target made by its provider from validated settings. Immutable; a reload builds a
// new one, and deploys already running keep the one they started with.
class Inventory {
 public:
  // Throws ConfigError naming every bad provider or target setting (file:line: key: problem).
  static std::shared_ptr<const Inventory> build(const Config& config,
                                                const ProviderRegistry& registry,
                                                const ProviderEnvironment& environment);
  // With the config's providers already built (and checked: ProviderSet::build).
  static std::shared_ptr<const Inventory> build(const Config& config,
                                                std::shared_ptr<const ProviderSet> providers);

  const ProviderSet& providers() const { return *providers_; }
  std::shared_ptr<const ProviderSet> provider_set() const { return providers_; }

  const DeployPlanner& planner() const { return planner_; }
  const DeployConfig& settings() const { return settings_; }
  bool has_repo(const std::string& repo) const { return repos_.count(repo) != 0; }
  // Null when the repo has no target in env.
  const TargetEntry* target(const std::string& repo, const std::string& env) const;
  // Every repo with a target in env, by name.
  std::vector<std::string> repos_in(const std::string& env) const;
  // Repo+env pairs with a target.
  std::size_t target_count() const;
  // True when some repo has a target in env.
  bool has_env(const std::string& env) const;

 private:
  explicit Inventory(DeployPlanner planner) : planner_(std::move(planner)) {}
  // `problems` found before (the providers'), reported with the targets' own.
  static std::shared_ptr<const Inventory> build(const Config& config,
                                                std::shared_ptr<const ProviderSet> providers,
                                                std::vector<std::string> problems);

  DeployPlanner planner_;
  DeployConfig settings_;
  std::map<std::string, bool> repos_;
  std::shared_ptr<const ProviderSet> providers_;
  std::map<std::string, std::map<std::string, TargetEntry>> targets_;  // repo -> env -> target
};

}  // namespace orgd::deploy
