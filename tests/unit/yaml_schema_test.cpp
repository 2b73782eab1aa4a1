#include "daemon/core/yaml_schema.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"

namespace orgd {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> problems_of(SettingsReader& reader) {
  try {
    reader.finish();
  } catch (const ConfigError& e) {
    return e.problems();
  }
  return {};
}

TEST(SettingsReaderTest, CollectsEveryProblemInFileOrder) {
  const YAML::Node settings = YAML::Load("tiemout: 5s\nduration: soon\nfail: maybe\n");
  SettingsReader reader{settings, "orgd.yaml", 7, "deploy.production", {"provider"}};
  (void)reader.boolean("fail", false);
  (void)reader.duration("duration", Duration{});
  (void)reader.required_string("command");
  EXPECT_THAT(problems_of(reader),
              ElementsAre("orgd.yaml:1: deploy.production.tiemout: unknown key",
                          "orgd.yaml:2: deploy.production.duration: invalid duration \"soon\" "
                          "(expected e.g. 500ms, 30s, 5m, 2h, 1m30s)",
                          "orgd.yaml:3: deploy.production.fail: expected true or false, got "
                          "\"maybe\"",
                          "orgd.yaml:7: deploy.production.command: required key missing"));
}

// Provider settings are read like every other key of the file: the config's booleans (true/false,
// yes/no, on/off; not yaml-cpp's y/n), a string is not empty, a list holds strings.
TEST(SettingsReaderTest, ReadsValuesAsTheConfigLoaderDoes) {
  const YAML::Node settings = YAML::Load("fail: y\nname: ''\nenv: [A, {b: 1}]\n");
  SettingsReader reader{settings, "orgd.yaml", 1, "deploy.dev", {}};
  EXPECT_TRUE(reader.boolean("fail", true));
  EXPECT_EQ(reader.string("name"), std::nullopt);
  EXPECT_EQ(reader.string_list("env"), std::nullopt);
  EXPECT_THAT(problems_of(reader),
              ElementsAre("orgd.yaml:1: deploy.dev.fail: expected true or false, got \"y\"",
                          "orgd.yaml:2: deploy.dev.name: must not be empty",
                          "orgd.yaml:3: deploy.dev.env: expected a list of strings, got an item "
                          "that is a map"));
}

TEST(SettingsReaderTest, ReadsAMapOfStrings) {
  const YAML::Node settings =
      YAML::Load("inputs: {ref: '${ORGD_REF}', count: 3, dry: true}\nbad: [x]\nworse: {a: [1]}\n");
  SettingsReader reader{settings, "orgd.yaml", 1, "deploy.dev", {}};
  const auto inputs = reader.string_map("inputs");
  ASSERT_TRUE(inputs.has_value());
  EXPECT_EQ(*inputs, (std::map<std::string, std::string>{
                         {"count", "3"}, {"dry", "true"}, {"ref", "${ORGD_REF}"}}));
  EXPECT_EQ(reader.string_map("bad"), std::nullopt);
  EXPECT_EQ(reader.string_map("worse"), std::nullopt);
  EXPECT_EQ(reader.string_map("absent"), std::nullopt);
  const auto problems = problems_of(reader);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_THAT(problems[0], ::testing::StartsWith("orgd.yaml:2: deploy.dev.bad: expected a map"));
  EXPECT_THAT(problems[1], ::testing::StartsWith("orgd.yaml:3: deploy.dev.worse.a: expected a string"));
}

TEST(SettingsReaderTest, LeavesOrgdKeysToOrgd) {
  const YAML::Node settings = YAML::Load("provider: files\nretries: 2\nduration: 1s\n");
  SettingsReader reader{settings, "orgd.yaml", 1, "deploy.dev", {"provider", "retries"}};
  EXPECT_EQ(reader.duration("duration", Duration{}), std::chrono::seconds{1});
  EXPECT_THAT(problems_of(reader), ElementsAre());
}

// The settings' problems are formatted by the config's reader: a key from the file never
// breaks the one-line message.
TEST(SettingsReaderTest, UnknownKeyWithControlCharactersStaysOnOneLine) {
  const YAML::Node settings = YAML::Load("\"a\\nb\": 1\n");
  SettingsReader reader{settings, "orgd.yaml", 1, "deploy.dev", {}};
  EXPECT_THAT(problems_of(reader), ElementsAre("orgd.yaml:1: deploy.dev.a\\nb: unknown key"));
}

TEST(SchemaReaderTest, MappingReportsUnknownAndDuplicateKeys) {
  constexpr auto kKeys = std::to_array<std::string_view>({"level", "format"});
  SchemaReader schema{"test.yaml"};
  const YAML::Node root = schema.parse("log:\n  level: info\n  lvl: x\n  level: warn\n");
  const auto entries = schema.mapping(root["log"], "log", 1, kKeys);
  ASSERT_TRUE(entries.has_value());
  EXPECT_EQ(entries->size(), 1u);
  try {
    schema.fail();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(),
                ElementsAre("test.yaml:3: log.lvl: unknown key (expected one of: level, format)",
                            "test.yaml:4: log.level: duplicate key (first at line 2)"));
  }
}

TEST(SchemaReaderTest, ParseRejectsASecondDocument) {
  SchemaReader schema{"test.yaml"};
  try {
    (void)schema.parse("org: a\n---\norg: b\n");
    FAIL() << "a second document was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(),
                ElementsAre("test.yaml:2: more than one YAML document ('---'): a config is a "
                            "single document"));
  }
}

}  // namespace
}  // namespace orgd
