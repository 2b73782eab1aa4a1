// An exec target's command gets the repo's secrets from the vault (RepoSecrets) in its
// environment, and what it prints reaches orgd (log lines, the step's error) only with those
// values replaced by ***: also when a value is written in two pieces, straddles the line cut, or
// spans several lines. Names that clash with the command's other variables, and a vault that
// cannot resolve a name, fail the run before anything starts.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/subprocess.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/exec/exec_provider.hpp"
#include "plugins/exec/output_scrubber.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr const char* kToken = "canary-token-8e1f27";
constexpr const char* kPem =
    "-----BEGIN KEY-----\ncanaryline1xyz\ncanaryline2xyz\n-----END KEY-----";

// The vault as a test sets it: fixed secrets, or a failure.
class FixedRepoSecrets final : public RepoSecrets {
 public:
  std::vector<std::pair<std::string, std::string>> values;
  std::optional<Error> failure;
  std::vector<std::string> asked;

  Result<std::vector<NamedSecret>> secrets_for(const std::string& repo) override {
    asked.push_back(repo);
    if (failure) return *failure;
    std::vector<NamedSecret> out;
    for (const auto& [name, value] : values) out.push_back({name, Secret::from(value)});
    return out;
  }
};

struct Collected {
  std::vector<std::string> lines;
  LogSink sink() {
    return [this](std::string_view line) { lines.emplace_back(line); };
  }
  std::string joined() const {
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    return all;
  }
};

DeployContext context() {
  DeployContext c;
  c.repo = "api";
  c.env = "production";
  c.ref = "abc123";
  c.deploy_id = "d-1";
  return c;
}

std::shared_ptr<FixedRepoSecrets> canary_vault() {
  auto vault = std::make_shared<FixedRepoSecrets>();
  vault->values = {{"API_TOKEN", kToken}, {"PEM_KEY", kPem}, {"SHORT", "abc"}};
  return vault;
}

ExecDeployTarget target(const std::string& command, const fs::path& workdir,
                        std::shared_ptr<RepoSecrets> vault,
                        std::optional<std::string> rollback = std::nullopt) {
  ExecDeployTarget::Settings settings;
  settings.command = command;
  settings.workdir = workdir.string();
  settings.timeout = std::chrono::seconds{20};
  settings.rollback_command = std::move(rollback);
  settings.environment = {{"PATH", "/usr/bin:/bin"}, {"DEPLOY_REGION", "eu-west"}};
  settings.repo_secrets = std::move(vault);
  return ExecDeployTarget{std::move(settings)};
}

void expect_no_canary(const std::string& text) {
  EXPECT_EQ(text.find("canary"), std::string::npos) << text;
  // Not even a piece: the first bytes of the token.
  EXPECT_EQ(text.find("8e1f"), std::string::npos) << text;
}

TEST(ExecSecrets, TheCommandGetsTheRepoSecretsInItsEnvironment) {
  TempDir dir;
  auto vault = canary_vault();
  auto t = target("env > env.txt", dir.path(), vault);
  Collected log;
  const auto result = t.start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
  EXPECT_EQ(vault->asked, (std::vector<std::string>{"api"}));
  const std::string env = testing::read_file(dir / "env.txt");
  EXPECT_NE(env.find(std::string{"API_TOKEN="} + kToken + "\n"), std::string::npos) << env;
  EXPECT_NE(env.find(std::string{"PEM_KEY="} + kPem + "\n"), std::string::npos) << env;
  EXPECT_NE(env.find("SHORT=abc\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DEPLOY_REGION=eu-west\n"), std::string::npos) << env;
  EXPECT_NE(env.find("ORGD_REPO=api\n"), std::string::npos) << env;
}

TEST(ExecSecrets, WithoutAVaultTheCommandGetsNoSecrets) {
  TempDir dir;
  auto t = target("env > env.txt", dir.path(), nullptr);
  Collected log;
  const auto result = t.start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::succeeded);
  EXPECT_EQ(testing::read_file(dir / "env.txt").find("API_TOKEN"), std::string::npos);
}

TEST(ExecSecrets, EchoedSecretsReachOrgdOnlyAsStars) {
  TempDir dir;
  // Plain, split over two writes that reach orgd as two reads (the sleep keeps them apart), a
  // multi-line value, and a short value that is not scrubbed.
  const std::string command =
      "echo \"token=$API_TOKEN!\"; "
      "first=$(printf %s \"$API_TOKEN\" | cut -c1-8); rest=$(printf %s \"$API_TOKEN\" | cut -c9-); "
      "printf 'split:%s' \"$first\"; sleep 0.3; printf '%s:end\\n' \"$rest\"; "
      "printf '%s\\n' \"$PEM_KEY\"; "
      "echo \"short=$SHORT\"; "
      "echo \"twice $API_TOKEN$API_TOKEN\"";
  auto t = target(command, dir.path(), canary_vault());
  Collected log;
  const auto result = t.start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
  // Each line of the multi-line value is one of its lines: all four are masked.
  EXPECT_EQ(log.lines, (std::vector<std::string>{"token=***!", "split:***:end", "***", "***", "***",
                                                 "***", "short=abc", "twice ***"}));
  expect_no_canary(log.joined());
}

TEST(ExecSecrets, ASecretAtTheLineCutLeavesNoPrefix) {
  TempDir dir;
  // The token starts 10 bytes before the 1000-byte cut and ends past it: the line is scrubbed
  // before it is cut, so no first bytes of it are left.
  const std::string command = "printf '%0990d%s\\n' 0 \"$API_TOKEN\"";
  auto t = target(command, dir.path(), canary_vault());
  Collected log;
  ASSERT_TRUE(t.start(context(), log.sink()).ok());
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], std::string(990, '0') + "***");
}

TEST(ExecSecrets, AFailuresLastLineIsScrubbed) {
  TempDir dir;
  auto t = target("echo \"bad token $API_TOKEN\"; exit 3", dir.path(), canary_vault());
  Collected log;
  const auto result = t.start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::failed);
  EXPECT_EQ(result.value().error, "exit code 3: bad token ***");
}

TEST(ExecSecrets, TheRollbackCommandGetsTheSameSecretsAndScrubbing) {
  TempDir dir;
  auto t = target("true", dir.path(), canary_vault(),
                  "env > rollback-env.txt; echo \"rolling back with $API_TOKEN\"");
  Collected log;
  const auto result = t.rollback(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
  EXPECT_EQ(log.lines, (std::vector<std::string>{"rolling back with ***"}));
  EXPECT_NE(testing::read_file(dir / "rollback-env.txt").find(std::string{"API_TOKEN="} + kToken),
            std::string::npos);
}

TEST(ExecSecrets, ASecretNamedLikeAnotherVariableFailsTheRunBeforeItStarts) {
  const std::vector<std::pair<std::string, std::string>> clashes = {
      {"ORGD_REPO", "secret ORGD_REPO has the name of a variable orgd sets for each deploy"},
      {"DEPLOY_REGION",
       "secret DEPLOY_REGION has the name of a variable the target passes from orgd's "
       "environment (PATH, HOME, LANG, TZ or a name under env:)"},
      {"HOME",
       "secret HOME has the name of a variable the target passes from orgd's environment "
       "(PATH, HOME, LANG, TZ or a name under env:)"},
      {"BAD-NAME",
       "secret BAD-NAME cannot be an environment variable (letters, digits and _ only)"},
  };
  for (const auto& [name, error] : clashes) {
    TempDir dir;
    auto vault = std::make_shared<FixedRepoSecrets>();
    vault->values = {{"API_TOKEN", kToken}, {name, "canary-clash"}};
    auto t = target("touch ran", dir.path(), vault);
    Collected log;
    const auto result = t.start(context(), log.sink());
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result.value().status, DeployStatus::failed) << name;
    EXPECT_EQ(result.value().error, error);
    EXPECT_FALSE(fs::exists(dir / "ran")) << name;
    expect_no_canary(result.value().error);
  }
}

TEST(ExecSecrets, AVaultThatCannotResolveASecretFailsTheRunNamingIt) {
  TempDir dir;
  auto vault = std::make_shared<FixedRepoSecrets>();
  vault->failure = not_found("no value for secret DB_PASSWORD (repo api)");
  auto t = target("touch ran", dir.path(), vault);
  Collected log;
  const auto result = t.start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::failed);
  EXPECT_EQ(result.value().error,
            "the secrets of api are unavailable: no value for secret DB_PASSWORD (repo api)");
  EXPECT_FALSE(fs::exists(dir / "ran"));
}

TEST(ExecSecrets, TheProviderPassesTheVaultToItsTargets) {
  TempDir dir;
  auto vault = canary_vault();
  ProviderConfig config;
  config.name = "shell";
  config.type = "exec";
  config.settings = YAML::Load("{type: exec}");
  ProviderServices services;
  services.name = "shell";
  services.type = "exec";
  services.clock = std::make_shared<SystemClock>();
  services.environment = Environment{{{"PATH", "/usr/bin:/bin"}}};
  services.repo_secrets = vault;
  auto provider = make_exec_provider(config, services, "test.yaml");
  DeployTargetConfig target_config;
  target_config.provider = "shell";
  target_config.settings =
      YAML::Load("{command: 'echo \"$API_TOKEN\" > token.txt', workdir: " + dir.str() + "}");
  auto t = provider->make_deploy_target(target_config, "test.yaml");
  Collected log;
  const auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
  EXPECT_EQ(testing::read_file(dir / "token.txt"), std::string{kToken} + "\n");
}

TEST(SpawnSecretEnvironment, SecretVariablesReachTheChildAndANameGivenTwiceIsRefused) {
  TempDir dir;
  const Secret value = Secret::from("canary value\nwith a newline");
  const Secret empty;
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", "printf '%s|%s|%s' \"$S\" \"${E-unset}\" \"$PLAIN\" > out"};
  options.env = {{"PATH", "/usr/bin:/bin"}, {"PLAIN", "p"}};
  options.secret_env = {{"S", &value}, {"E", &empty}};
  options.workdir = dir.str();
  const auto child = spawn_child(options);
  ASSERT_TRUE(reap_child(child.pid, /*block=*/true).has_value());
  EXPECT_EQ(testing::read_file(dir / "out"), "canary value\nwith a newline||p");

  options.secret_env = {{"PLAIN", &value}};
  EXPECT_THROW(spawn_child(options), SpawnError);
}

TEST(OutputScrubber, ReplacesEveryCoveredStretchOnce) {
  const Secret a = Secret::from("abcdef");
  const Secret b = Secret::from("defghi");
  const Secret shorty = Secret::from("xyz");
  const Secret multi = Secret::from("line-one\r\nok\nline-three");
  const OutputScrubber scrubber{{&a, &b, &shorty, &multi, nullptr}};
  EXPECT_EQ(scrubber.scrub("x abcdefghi y"), "x *** y");  // overlapping: one mask
  EXPECT_EQ(scrubber.scrub("abcdefabcdef"), "***");       // adjacent: one mask
  EXPECT_EQ(scrubber.scrub("xyz abcde"), "xyz abcde");    // short values and prefixes stay
  EXPECT_EQ(scrubber.scrub("got line-one and line-three, ok"), "got *** and ***, ok");
  EXPECT_EQ(scrubber.longest(), 10u);
  EXPECT_TRUE(OutputScrubber{}.empty());
  EXPECT_EQ(OutputScrubber{}.scrub("abcdef"), "abcdef");
}

}  // namespace
}  // namespace orgd
