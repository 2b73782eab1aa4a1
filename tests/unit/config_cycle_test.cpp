#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"

namespace orgd {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> problems(const std::string& yaml) {
  try {
    load_config_string(yaml, "test.yaml", Environment{});
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "config loaded without errors:\n" << yaml;
  return {};
}

TEST(ConfigCycle, ThreeRepoCycleNamesFileLineAndCycle) {
  const std::string yaml =
      "repos:\n"
      "  solo: {}\n"
      "  a:\n"
      "    depends_on: [b]\n"
      "  b:\n"
      "    depends_on: [c]\n"
      "  c:\n"
      "    depends_on: [a]\n";
  EXPECT_THAT(problems(yaml), ElementsAre("test.yaml:3: repos.a.depends_on: dependency cycle: "
                                          "a -> b -> c -> a"));
}

TEST(ConfigCycle, CycleStartsAtTheRepoWrittenFirst) {
  // Map keys are kept sorted in the Config; the message still follows the file.
  const std::string yaml =
      "repos:\n"
      "  web:\n"
      "    depends_on: [api]\n"
      "  api:\n"
      "    depends_on: [web]\n";
  EXPECT_THAT(
      problems(yaml),
      ElementsAre("test.yaml:2: repos.web.depends_on: dependency cycle: web -> api -> web"));
}

TEST(ConfigCycle, SelfDependencyIsReportedOnceAsBefore) {
  const auto found = problems("repos:\n  api:\n    depends_on: [api]\n");
  EXPECT_THAT(found,
              ElementsAre("test.yaml:3: repos.api.depends_on: a repo cannot depend on itself"));
}

TEST(ConfigCycle, CycleIsCollectedWithOtherProblems) {
  const std::string yaml =
      "repos:\n"
      "  a:\n"
      "    depends_on: [b, nowhere]\n"
      "  b:\n"
      "    depends_on: [a]\n";
  const auto found = problems(yaml);
  EXPECT_THAT(found, Contains(HasSubstr("unknown repo \"nowhere\"")));
  EXPECT_THAT(found, Contains("test.yaml:2: repos.a.depends_on: dependency cycle: a -> b -> a"));
}

TEST(ConfigCycle, AcyclicConfigLoads) {
  const std::string yaml =
      "repos:\n"
      "  api: {}\n"
      "  web:\n"
      "    depends_on: [api]\n"
      "  worker:\n"
      "    depends_on: [api, web]\n";
  const Config config = load_config_string(yaml, "test.yaml", Environment{});
  EXPECT_EQ(config.repos.size(), 3U);
}

TEST(ConfigCycle, EmbeddedDefaultLoads) {
  EXPECT_NO_THROW(load_config_string(embedded_default_config(), "orgd.dev.yaml", Environment{}));
}

}  // namespace
}  // namespace orgd
