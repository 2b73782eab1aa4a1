#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/errors.hpp"
#include "daemon/deploy/planner.hpp"

namespace orgd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Waves = DeployPlanner::Waves;

// The repos of config/orgd.dev.yaml: web and worker depend on api.
std::vector<RepoNode> dev_inventory() {
  return {{"web", {"api"}}, {"api", {}}, {"worker", {"api"}}};
}

Waves plan_ok(const DeployPlanner& planner, const std::vector<std::string>& selected) {
  auto result = planner.plan(selected);
  EXPECT_TRUE(result.ok()) << result.error().message;
  return result.ok() ? result.value() : Waves{};
}

std::string constructor_error(std::vector<RepoNode> repos) {
  try {
    DeployPlanner planner(std::move(repos));
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "the planner accepted the inventory";
  return {};
}

TEST(DeployPlanner, DevInventoryInTwoWaves) {
  DeployPlanner planner(dev_inventory());
  EXPECT_EQ(planner.plan_all(), (Waves{{"api"}, {"web", "worker"}}));
  EXPECT_EQ(plan_ok(planner, {"api", "web", "worker"}), (Waves{{"api"}, {"web", "worker"}}));
}

TEST(DeployPlanner, SelectionPlansOnlyTheSelectedRepos) {
  DeployPlanner planner(dev_inventory());
  EXPECT_EQ(plan_ok(planner, {"web"}), (Waves{{"web"}}));
  EXPECT_EQ(plan_ok(planner, {"web", "api"}), (Waves{{"api"}, {"web"}}));
  EXPECT_EQ(plan_ok(planner, {"worker", "web"}), (Waves{{"web", "worker"}}));
}

TEST(DeployPlanner, DuplicatesInTheSelectionAreIgnored) {
  DeployPlanner planner(dev_inventory());
  EXPECT_EQ(plan_ok(planner, {"web", "api", "web", "api"}), (Waves{{"api"}, {"web"}}));
}

TEST(DeployPlanner, OrdersThroughUnselectedRepos) {
  // app -> lib -> core; only app and core are selected, lib still orders them.
  DeployPlanner planner({{"app", {"lib"}}, {"lib", {"core"}}, {"core", {}}});
  EXPECT_EQ(plan_ok(planner, {"app", "core"}), (Waves{{"core"}, {"app"}}));
  // A long unselected chain counts as one step, not one wave per hop.
  DeployPlanner chain({{"e", {"d"}}, {"d", {"c"}}, {"c", {"b"}}, {"b", {"a"}}, {"a", {}}});
  EXPECT_EQ(plan_ok(chain, {"e", "a"}), (Waves{{"a"}, {"e"}}));
  EXPECT_EQ(plan_ok(chain, {"e", "c", "a"}), (Waves{{"a"}, {"c"}, {"e"}}));
}

TEST(DeployPlanner, Diamond) {
  DeployPlanner planner(
      {{"top", {"left", "right"}}, {"left", {"base"}}, {"right", {"base"}}, {"base", {}}});
  EXPECT_EQ(planner.plan_all(), (Waves{{"base"}, {"left", "right"}, {"top"}}));
  EXPECT_EQ(plan_ok(planner, {"top", "base"}), (Waves{{"base"}, {"top"}}));
}

TEST(DeployPlanner, WaveDepthIsTheLongestDependencyChain) {
  // c depends on a directly and through b: it must wait for b.
  DeployPlanner planner({{"c", {"a", "b"}}, {"b", {"a"}}, {"a", {}}});
  EXPECT_EQ(planner.plan_all(), (Waves{{"a"}, {"b"}, {"c"}}));
}

TEST(DeployPlanner, IndependentReposShareOneWaveSortedByName) {
  DeployPlanner planner({{"zeta", {}}, {"alpha", {}}, {"mid", {}}});
  EXPECT_EQ(planner.plan_all(), (Waves{{"alpha", "mid", "zeta"}}));
}

TEST(DeployPlanner, EmptyInventoryHasNoWaves) {
  DeployPlanner planner({});
  EXPECT_TRUE(planner.plan_all().empty());
}

TEST(DeployPlanner, CycleOfTwoIsNamed) {
  EXPECT_EQ(constructor_error({{"a", {"b"}}, {"b", {"a"}}}), "dependency cycle: a -> b -> a");
}

TEST(DeployPlanner, CycleOfThreeIsNamed) {
  EXPECT_EQ(constructor_error({{"ok", {}}, {"a", {"b", "ok"}}, {"b", {"c"}}, {"c", {"a"}}}),
            "dependency cycle: a -> b -> c -> a");
  // The cycle starts at the repo listed first, whatever the walk found first.
  EXPECT_EQ(constructor_error({{"down", {"b"}}, {"c", {"a"}}, {"a", {"b"}}, {"b", {"c"}}}),
            "dependency cycle: c -> a -> b -> c");
}

TEST(DeployPlanner, SelfDependencyIsACycle) {
  EXPECT_EQ(constructor_error({{"a", {"a"}}}), "dependency cycle: a -> a");
}

TEST(DeployPlanner, UnknownDependencyIsRejected) {
  EXPECT_THAT(constructor_error({{"web", {"api"}}}),
              HasSubstr("repo \"web\" depends on unknown repo \"api\""));
}

TEST(DeployPlanner, RepoListedTwiceIsRejected) {
  EXPECT_THAT(constructor_error({{"api", {}}, {"api", {}}}), HasSubstr("\"api\" is listed twice"));
}

TEST(DeployPlanner, FindCycleOnAnAcyclicInventory) {
  EXPECT_FALSE(find_cycle(dev_inventory()).has_value());
  EXPECT_THAT(find_cycle({{"a", {"b"}}, {"b", {"c"}}, {"c", {"a"}}}).value(),
              ElementsAre("a", "b", "c"));
  // Unknown dependencies are no edges.
  EXPECT_FALSE(find_cycle({{"a", {"nowhere"}}}).has_value());
}

TEST(DeployPlanner, UnknownSelectedRepoIsNotFound) {
  DeployPlanner planner(dev_inventory());
  auto result = planner.plan({"web", "mobile"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::not_found);
  EXPECT_THAT(result.error().message, HasSubstr("\"mobile\""));
}

TEST(DeployPlanner, EmptySelectionIsInvalid) {
  DeployPlanner planner(dev_inventory());
  auto result = planner.plan({});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::invalid_argument);
}

// Every edge between selected repos, direct or through unselected ones, goes forward across waves.
void expect_edges_go_forward(const std::vector<RepoNode>& repos, const Waves& waves,
                             const std::vector<bool>& selected) {
  std::map<std::string, std::size_t> wave_of;
  for (std::size_t w = 0; w < waves.size(); ++w) {
    EXPECT_FALSE(waves[w].empty());
    EXPECT_TRUE(std::is_sorted(waves[w].begin(), waves[w].end()));
    for (const auto& name : waves[w]) EXPECT_TRUE(wave_of.emplace(name, w).second) << name;
  }
  std::size_t selected_count = 0;
  for (bool s : selected) selected_count += s ? 1 : 0;
  EXPECT_EQ(wave_of.size(), selected_count);
  // Repos are named r<index> and only depend on lower indexes, so in index order the latest
  // selected-ancestor wave of each repo is known before it is needed.
  std::vector<long> bound(repos.size(), -1);  // latest wave among selected repos reached through
  std::size_t edges = 0;
  for (std::size_t i = 0; i < repos.size(); ++i) {
    long reach = -1;
    for (const auto& dependency : repos[i].depends_on) {
      const auto d = static_cast<std::size_t>(std::stol(dependency.substr(1)));
      reach = std::max(reach, bound[d]);
      if (selected[i] && selected[d]) {
        ++edges;
        EXPECT_LT(wave_of.at(dependency), wave_of.at(repos[i].name))
            << dependency << " -> " << repos[i].name;
      }
    }
    if (selected[i]) {
      EXPECT_GT(static_cast<long>(wave_of.at(repos[i].name)), reach) << repos[i].name;
      bound[i] = static_cast<long>(wave_of.at(repos[i].name));
    } else {
      bound[i] = reach;
    }
  }
  EXPECT_GT(edges, 0U);
}

TEST(DeployPlanner, ThousandRepoRandomDag) {
  constexpr std::size_t kRepos = 1500;
  std::mt19937 random(20261126);  // fixed seed: the same graph every run
  std::vector<RepoNode> repos;
  for (std::size_t i = 0; i < kRepos; ++i) {
    RepoNode node{"r" + std::to_string(i), {}};
    if (i > 0) {
      std::uniform_int_distribution<std::size_t> pick(0, i - 1);
      const std::size_t count = std::uniform_int_distribution<std::size_t>(0, 4)(random);
      for (std::size_t k = 0; k < count; ++k) {
        auto dependency = "r" + std::to_string(pick(random));
        if (std::find(node.depends_on.begin(), node.depends_on.end(), dependency) ==
            node.depends_on.end()) {
          node.depends_on.push_back(std::move(dependency));
        }
      }
    }
    repos.push_back(std::move(node));
  }
  // Listed in a shuffled order: the planner must not rely on input order.
  std::vector<RepoNode> shuffled = repos;
  std::shuffle(shuffled.begin(), shuffled.end(), random);
  DeployPlanner planner(shuffled);

  expect_edges_go_forward(repos, planner.plan_all(), std::vector<bool>(kRepos, true));

  std::vector<bool> selected(kRepos, false);
  std::vector<std::string> selection;
  for (std::size_t i = 0; i < kRepos; ++i) {
    if (std::bernoulli_distribution(0.3)(random)) {
      selected[i] = true;
      selection.push_back(repos[i].name);
    }
  }
  expect_edges_go_forward(repos, plan_ok(planner, selection), selected);
}

}  // namespace
}  // namespace orgd
