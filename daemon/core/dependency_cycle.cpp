#include "daemon/core/dependency_cycle.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace orgd {
namespace {

// Kahn's algorithm over "dependency before dependent". Returns the repos it could order; when a
// cycle exists the rest are left out, and every repo left out has a dependency left out too.
std::vector<std::size_t> kahn_order(const DependencyGraph& graph, std::vector<bool>& ordered) {
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
std::vector<std::size_t> cycle_among_unordered(const DependencyGraph& graph,
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

}  // namespace

DependencyGraph DependencyGraph::build(const std::vector<RepoNode>& repos,
                                       const std::unordered_map<std::string, std::size_t>& index) {
  DependencyGraph graph;
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

DependencyOrder order_dependencies(const DependencyGraph& graph) {
  DependencyOrder result;
  std::vector<bool> ordered;
  result.order = kahn_order(graph, ordered);
  if (result.order.size() != graph.dependencies.size()) {
    result.cycle = cycle_among_unordered(graph, ordered);
  }
  return result;
}

std::optional<std::vector<std::string>> find_cycle(const std::vector<RepoNode>& repos) {
  std::unordered_map<std::string, std::size_t> index;
  index.reserve(repos.size());
  for (std::size_t i = 0; i < repos.size(); ++i) index.emplace(repos[i].name, i);
  const auto result = order_dependencies(DependencyGraph::build(repos, index));
  if (result.cycle.empty()) return std::nullopt;
  std::vector<std::string> names;
  for (std::size_t i : result.cycle) names.push_back(repos[i].name);
  return names;
}

std::string describe_cycle(const std::vector<std::string>& cycle) {
  if (cycle.empty()) return {};
  return fmt::format("{} -> {}", fmt::join(cycle, " -> "), cycle.front());
}

}  // namespace orgd
