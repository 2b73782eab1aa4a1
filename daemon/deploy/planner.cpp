#include "daemon/deploy/planner.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace orgd {
namespace {

struct Graph {
  std::vector<std::vector<std::size_t>> dependencies;  // known dependencies, by repo index
  std::vector<std::vector<std::size_t>> dependents;
};

// Kahn's algorithm over "dependency before dependent". Returns the repos it could order; when a
// cycle exists the rest are left out, and every repo left out has a dependency left out too.
std::vector<std::size_t> kahn_order(const Graph& graph, std::vector<bool>& ordered) {
  const std::size_t n = graph.dependencies.size();
  std::vector<std::size_t> pending(n);
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    pending[i] = graph.dependencies[i].size();
    if (pending[i] == 0) order.push_back(i);
  }
  for (std::size_t next = 0; next < order.size(); ++next) {
    for (std::size_t dependent : graph.dependents[order[next]]) {
      if (--pending[dependent] == 0) order.push_back(dependent);
    }
  }
  ordered.assign(n, false);
  for (std::size_t i : order) ordered[i] = true;
  return order;
}

// Walks dependencies among the repos Kahn could not order until one repeats: O(V + E).
std::vector<std::size_t> cycle_among_unordered(const Graph& graph,
                                               const std::vector<bool>& ordered) {
  const std::size_t n = graph.dependencies.size();
  const auto start =
      static_cast<std::size_t>(std::find(ordered.begin(), ordered.end(), false) - ordered.begin());
  constexpr std::size_t kNotOnPath = static_cast<std::size_t>(-1);
  std::vector<std::size_t> position(n, kNotOnPath);
  std::vector<std::size_t> path;
  std::size_t current = start;
  while (position[current] == kNotOnPath) {
    position[current] = path.size();
    path.push_back(current);
    const auto& deps = graph.dependencies[current];
    current = *std::find_if(deps.begin(), deps.end(), [&](std::size_t d) { return !ordered[d]; });
  }
  std::vector<std::size_t> cycle(path.begin() + static_cast<std::ptrdiff_t>(position[current]),
                                 path.end());
  std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());
  return cycle;
}

Graph build_graph(const std::vector<RepoNode>& repos,
                  const std::unordered_map<std::string, std::size_t>& index) {
  Graph graph;
  graph.dependencies.resize(repos.size());
  graph.dependents.resize(repos.size());
  for (std::size_t i = 0; i < repos.size(); ++i) {
    for (const auto& dependency : repos[i].depends_on) {
      auto it = index.find(dependency);
      if (it == index.end()) continue;
      graph.dependencies[i].push_back(it->second);
      graph.dependents[it->second].push_back(i);
    }
  }
  return graph;
}

std::unordered_map<std::string, std::size_t> index_names(const std::vector<RepoNode>& repos) {
  std::unordered_map<std::string, std::size_t> index;
  index.reserve(repos.size());
  for (std::size_t i = 0; i < repos.size(); ++i) index.emplace(repos[i].name, i);
  return index;
}

}  // namespace

std::optional<std::vector<std::string>> find_cycle(const std::vector<RepoNode>& repos) {
  const auto graph = build_graph(repos, index_names(repos));
  std::vector<bool> ordered;
  if (kahn_order(graph, ordered).size() == repos.size()) return std::nullopt;
  std::vector<std::string> names;
  for (std::size_t i : cycle_among_unordered(graph, ordered)) names.push_back(repos[i].name);
  return names;
}

std::string describe_cycle(const std::vector<std::string>& cycle) {
  if (cycle.empty()) return {};
  return fmt::format("{} -> {}", fmt::join(cycle, " -> "), cycle.front());
}

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
  auto graph = build_graph(repos, index_);
  std::vector<bool> ordered;
  topological_order_ = kahn_order(graph, ordered);
  if (topological_order_.size() != repos.size()) {
    std::vector<std::string> names;
    for (std::size_t i : cycle_among_unordered(graph, ordered)) names.push_back(repos[i].name);
    throw std::invalid_argument("dependency cycle: " + describe_cycle(names));
  }
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
