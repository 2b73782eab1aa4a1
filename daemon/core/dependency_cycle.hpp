#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

// The repos' dependency graph: cycles, for the config loader's check, and the order the deploy
// planner builds its waves on. In core/ because the config loader (built alone for the fuzz
// targets) rejects cycles without depending on deploy/.
namespace orgd {

// One repo of the inventory and the repos it must be deployed after.
struct RepoNode {
  std::string name;
  std::vector<std::string> depends_on;
};

// Known dependencies (and their reverse), by index into the repos the graph was built from.
// Dependencies on repos not in the index are left out.
struct DependencyGraph {
  std::vector<std::vector<std::size_t>> dependencies;
  std::vector<std::vector<std::size_t>> dependents;

  static DependencyGraph build(const std::vector<RepoNode>& repos,
                               const std::unordered_map<std::string, std::size_t>& index);
};

// Every repo, dependencies before dependents (O(V + E)); when a cycle prevents that, `order`
// holds the repos that could be ordered and `cycle` one cycle among the rest, in cycle order and
// starting at its lowest index.
struct DependencyOrder {
  std::vector<std::size_t> order;
  std::vector<std::size_t> cycle;
};
DependencyOrder order_dependencies(const DependencyGraph& graph);

// The repos of one dependency cycle, in cycle order, e.g. {"a", "b", "c"} for a -> b -> c -> a
// (a depends on b, b on c, c on a). The cycle starts at its repo listed first in `repos`, so the
// answer is deterministic. Dependencies on repos not in `repos` are ignored.
std::optional<std::vector<std::string>> find_cycle(const std::vector<RepoNode>& repos);

// "a -> b -> c -> a" for {"a", "b", "c"}.
std::string describe_cycle(const std::vector<std::string>& cycle);

}  // namespace orgd
