#include "daemon/deploy/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace orgd {

DeployPlanner::DeployPlanner(std::vector<RepoNode> repos) {
  index_.reserve(repos.size());
  for (std::size_t i = 0; i < repos.size(); ++i) {
    if (!index_.emplace(repos[i].name, i).second) {
      throw std::invalid_argument(fmt::format("repo \"{}\" is listed twice", repos[i].name));
    }
  }
  for (const auto& repo : repos) {
    for (const auto& dependency : repo.depends_on) {
      if (index_.count(dependency) == 0) {
        throw std::invalid_argument(
            fmt::format("repo \"{}\" depends on unknown repo \"{}\"", repo.name, dependency));
      }
    }
  }
  auto graph = DependencyGraph::build(repos, index_);
  auto ordered = order_dependencies(graph);
  if (!ordered.cycle.empty()) {
    std::vector<std::string> names;
    for (std::size_t i : ordered.cycle) names.push_back(repos[i].name);
    throw std::invalid_argument("dependency cycle: " + describe_cycle(names));
  }
  topological_order_ = std::move(ordered.order);
  dependencies_ = std::move(graph.dependencies);
  names_.reserve(repos.size());
  for (auto& repo : repos) names_.push_back(std::move(repo.name));
}

Result<DeployPlanner::Waves> DeployPlanner::plan(const std::vector<std::string>& selected) const {
  if (selected.empty()) return invalid_argument("no repos selected");
  std::vector<bool> chosen(names_.size(), false);
  for (const auto& name : selected) {
    auto it = index_.find(name);
    if (it == index_.end()) return not_found(fmt::format("unknown repo \"{}\"", name));
    chosen[it->second] = true;
  }
  return waves_for(chosen);
}

DeployPlanner::Waves DeployPlanner::plan_all() const {
  return waves_for(std::vector<bool>(names_.size(), true));
}

DeployPlanner::Waves DeployPlanner::waves_for(const std::vector<bool>& selected) const {
  // earliest[r]: the first wave a selected repo depending on r (directly or through unselected
  // repos) may take. Dependencies come first in the topological order, so one pass suffices.
  std::vector<std::size_t> earliest(names_.size(), 0);
  Waves waves;
  for (std::size_t repo : topological_order_) {
    std::size_t wave = 0;
    for (std::size_t dependency : dependencies_[repo]) {
      wave = std::max(wave, earliest[dependency]);
    }
    if (selected[repo]) {
      if (waves.size() <= wave) waves.resize(wave + 1);
      waves[wave].push_back(names_[repo]);
      ++wave;
    }
    earliest[repo] = wave;
  }
  for (auto& wave : waves) std::sort(wave.begin(), wave.end());
  return waves;
}

}  // namespace orgd
