#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/core/dependency_cycle.hpp"
#include "daemon/core/errors.hpp"

namespace orgd {

// Orders deploys so that a repo goes out after the repos it depends on. Built once per inventory
// (O(V + E)); each plan is one pass over a topological order of the whole graph, so ordering
// through repos that are not selected costs no search per pair.
class DeployPlanner {
 public:
  using Waves = std::vector<std::vector<std::string>>;

  // Throws std::invalid_argument on a repo listed twice, an unknown dependency or a cycle (the
  // message names it: "dependency cycle: a -> b -> c -> a").
  explicit DeployPlanner(std::vector<RepoNode> repos);

  // Waves in dependency order for the selected repos, each wave sorted by name. A selected repo
  // comes after every selected repo it depends on, directly or through repos that are not
  // selected. Duplicates in the selection are ignored.
  Result<Waves> plan(const std::vector<std::string>& selected) const;

  // Every repo in the inventory, in waves.
  Waves plan_all() const;

 private:
  Waves waves_for(const std::vector<bool>& selected) const;

  std::vector<std::string> names_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::vector<std::size_t>> dependencies_;  // by repo index
  std::vector<std::size_t> topological_order_;          // dependencies before dependents
};

}  // namespace orgd
