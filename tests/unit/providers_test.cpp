#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/exec/exec_provider.hpp"
#include "plugins/local/local_provider.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/orgd-providers-XXXXXX";
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

ProviderConfig provider_config(const std::string& name, const std::string& type,
                               const std::string& yaml = "{}") {
  return {name, type, YAML::Load(yaml), 3};
}

DeployTargetConfig target_config(const std::string& provider, const std::string& yaml) {
  return {"production", provider, YAML::Load(yaml), 7};
}

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

DeployContext context() { return {"api", "production", "abc123", "d-1", 1}; }

struct Collected {
  std::vector<std::string> lines;
  LogSink sink() {
    return [this](std::string_view line) { lines.emplace_back(line); };
  }
};

// --- registry ---------------------------------------------------------------------------------

TEST(ProviderRegistryTest, BuildsLocalAndExec) {
  TempDir dir;
  ProviderRegistry registry;
  ProviderEnvironment env{dir.path()};
  EXPECT_TRUE(registry.supports("local"));
  EXPECT_TRUE(registry.supports("exec"));
  EXPECT_FALSE(registry.supports("github"));
  auto local = registry.create(provider_config("files", "local"), env, "orgd.yaml");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->name(), "files");
  EXPECT_EQ(local->type(), "local");
  auto exec = registry.create(provider_config("tasks", "exec"), env, "orgd.yaml");
  ASSERT_TRUE(exec);
  EXPECT_EQ(exec->type(), "exec");
}

TEST(ProviderRegistryTest, RejectsNotBuiltAndUnknownTypes) {
  ProviderRegistry registry;
  ProviderEnvironment env{"/tmp"};
  for (const std::string type : {"github", "cloudflare", "synadia", "remote"}) {
    const auto message = config_error(
        [&] { (void)registry.create(provider_config("p", type), env, "orgd.yaml"); });
    EXPECT_NE(message.find("orgd.yaml:3: providers.p: type '" + type + "' is not built yet"),
              std::string::npos)
        << message;
  }
  const auto message =
      config_error([&] { (void)registry.create(provider_config("p", "ftp"), env, "orgd.yaml"); });
  EXPECT_NE(message.find("type 'ftp' is unknown"), std::string::npos) << message;
}

TEST(ProviderRegistryTest, AddFactoryForTests) {
  ProviderRegistry registry;
  int built = 0;
  registry.add_factory("github", [&](const ProviderConfig& c, const ProviderEnvironment& e,
                                     const std::string& f) {
    ++built;
    return make_exec_provider(c, e, f);
  });
  EXPECT_TRUE(registry.supports("github"));
  EXPECT_TRUE(registry.create(provider_config("gh", "github"), {}, "orgd.yaml"));
  EXPECT_EQ(built, 1);
}

// --- local ------------------------------------------------------------------------------------

class LocalProviderTest : public ::testing::Test {
 protected:
  std::unique_ptr<DeployTarget> target(const std::string& yaml) {
    provider_ = registry_.create(provider_config("files", "local"), env_, "orgd.yaml");
    return provider_->make_deploy_target(target_config("files", yaml), "orgd.yaml");
  }
  fs::path record_dir() const { return fs::path{dir_.path()} / "local" / "api" / "production"; }

  TempDir dir_;
  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>();
  ProviderEnvironment env_{dir_.path(), clock_};
  ProviderRegistry registry_;
  std::unique_ptr<Provider> provider_;
};

TEST_F(LocalProviderTest, ValidatesSettings) {
  auto bad_duration = config_error([&] { target("{duration: soon}"); });
  EXPECT_NE(bad_duration.find("orgd.yaml:1: deploy.production.duration: expected a duration"),
            std::string::npos)
      << bad_duration;
  auto unknown = config_error([&] { target("{durations: 1s}"); });
  EXPECT_NE(unknown.find("deploy.production.durations: unknown key"), std::string::npos)
      << unknown;
  auto not_bool = config_error([&] { target("{fail: maybe}"); });
  EXPECT_NE(not_bool.find("deploy.production.fail: expected true or false"), std::string::npos)
      << not_bool;
  auto provider_key = config_error([&] {
    (void)registry_.create(provider_config("files", "local", "{root: /x}"), env_, "orgd.yaml");
  });
  EXPECT_NE(provider_key.find("orgd.yaml:1: providers.files.root: unknown key"),
            std::string::npos)
      << provider_key;
}

TEST_F(LocalProviderTest, StartWritesRecordAndPollSucceedsAfterDuration) {
  auto t = target("{duration: 2s}");
  Collected log;
  auto started = t->start(context(), log.sink());
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::running);
  EXPECT_EQ(started.value().handle, "d-1");
  EXPECT_EQ(log.lines.size(), 1u);

  std::ifstream in{record_dir() / "d-1.json"};
  ASSERT_TRUE(in);
  const auto record = nlohmann::json::parse(in);
  EXPECT_EQ(record["repo"], "api");
  EXPECT_EQ(record["env"], "production");
  EXPECT_EQ(record["ref"], "abc123");
  EXPECT_EQ(record["deploy_id"], "d-1");
  EXPECT_EQ(record["attempt"], 1);
  EXPECT_TRUE(record["started_at"].is_string());

  auto polled = t->poll(context(), "d-1");
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::running);
  clock_->advance(1999ms);
  EXPECT_EQ(t->poll(context(), "d-1").value().status, DeployStatus::running);
  clock_->advance(1ms);
  EXPECT_EQ(t->poll(context(), "d-1").value().status, DeployStatus::succeeded);

  auto missing = t->poll(context(), "d-2");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
}

TEST_F(LocalProviderTest, FailTrueFails) {
  auto t = target("{duration: 500ms, fail: true}");
  ASSERT_TRUE(t->start(context(), {}));
  clock_->advance(500ms);
  auto polled = t->poll(context(), "d-1");
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::failed);
  EXPECT_FALSE(polled.value().error.empty());
}

TEST_F(LocalProviderTest, RollbackWritesMarkerAndCounterCountsStarts) {
  auto t = target("{}");
  auto* local = dynamic_cast<LocalDeployTarget*>(t.get());
  ASSERT_NE(local, nullptr);
  EXPECT_TRUE(t->can_rollback());
  EXPECT_EQ(local->executions(), 0);
  ASSERT_TRUE(t->start(context(), {}));
  auto second = context();
  second.deploy_id = "d-2";
  ASSERT_TRUE(t->start(second, {}));
  EXPECT_EQ(local->executions(), 2);
  auto rolled = t->rollback(context(), {});
  ASSERT_TRUE(rolled);
  EXPECT_EQ(rolled.value().status, DeployStatus::succeeded);
  EXPECT_TRUE(fs::exists(record_dir() / "d-1.rolled_back"));
}

TEST_F(LocalProviderTest, RefusesPathEscapes) {
  auto t = target("{}");
  auto bad = context();
  bad.deploy_id = "../../etc";
  auto started = t->start(bad, {});
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, ErrorCode::invalid_argument);
}

// --- exec -------------------------------------------------------------------------------------

class ExecProviderTest : public ::testing::Test {
 protected:
  std::unique_ptr<DeployTarget> target(const std::string& yaml) {
    provider_ = registry_.create(provider_config("tasks", "exec"), {dir_.path()}, "orgd.yaml");
    return provider_->make_deploy_target(target_config("tasks", yaml), "orgd.yaml");
  }

  TempDir dir_;
  ProviderRegistry registry_;
  std::unique_ptr<Provider> provider_;
};

TEST_F(ExecProviderTest, SucceedsWithDeployEnvironment) {
  auto t = target(R"({command: 'echo $ORGD_REPO $ORGD_ENV $ORGD_REF $ORGD_DEPLOY_ID'})");
  EXPECT_FALSE(t->can_rollback());
  Collected log;
  auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "api production abc123 d-1");
  auto polled = t->poll(context(), result.value().handle);
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::succeeded);
}

TEST_F(ExecProviderTest, HonoursWorkdir) {
  auto t = target("{command: pwd, workdir: '" + dir_.path() + "'}");
  Collected log;
  auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(fs::canonical(log.lines[0]), fs::canonical(dir_.path()));
}

TEST_F(ExecProviderTest, NonZeroExitFails) {
  auto t = target("{command: 'echo oops >&2; exit 3'}");
  Collected log;
  auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::failed);
  EXPECT_EQ(result.value().error, "exit code 3");
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "oops");
  EXPECT_EQ(t->poll(context(), "d-1").value().error, "exit code 3");
}

TEST_F(ExecProviderTest, TimesOut) {
  // Unkilled, `sleep 5` would exit 0 and the deploy would succeed.
  auto t = target("{command: 'sleep 5', timeout: 200ms}");
  auto result = t->start(context(), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::failed);
  EXPECT_NE(result.value().error.find("timed out after 200ms"), std::string::npos)
      << result.value().error;
}

TEST_F(ExecProviderTest, CapsOutput) {
  auto t = target("{command: 'i=0; while [ $i -lt 5000 ]; do echo line$i; i=$((i+1)); done'}");
  Collected log;
  auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded);
  ASSERT_EQ(log.lines.size(), 1001u);
  EXPECT_EQ(log.lines[0], "line0");
  EXPECT_EQ(log.lines[999], "line999");
  EXPECT_EQ(log.lines.back(), "… 4000 lines dropped");
}

TEST_F(ExecProviderTest, CapsLineLength) {
  auto t = target("{command: 'head -c 5000 /dev/zero | tr \"\\\\0\" x; echo; echo end'}");
  Collected log;
  auto result = t->start(context(), log.sink());
  ASSERT_TRUE(result);
  ASSERT_EQ(log.lines.size(), 2u);
  EXPECT_EQ(log.lines[0], std::string(1000, 'x'));
  EXPECT_EQ(log.lines[1], "end");
}

TEST_F(ExecProviderTest, RunsRollbackCommand) {
  const auto marker = fs::path{dir_.path()} / "rolled";
  auto t = target("{command: 'true', rollback_command: 'echo back > " + marker.string() + "'}");
  EXPECT_TRUE(t->can_rollback());
  auto result = t->rollback(context(), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded);
  EXPECT_TRUE(fs::exists(marker));
}

TEST_F(ExecProviderTest, RollbackWithoutCommandIsAnError) {
  auto t = target("{command: 'true'}");
  EXPECT_FALSE(t->rollback(context(), {}));
}

TEST_F(ExecProviderTest, MissingCommandIsAConfigError) {
  auto message = config_error([&] { target("{workdir: /tmp}"); });
  EXPECT_NE(message.find("orgd.yaml:7: deploy.production.command: required key missing"),
            std::string::npos)
      << message;
  auto bad_timeout = config_error([&] { target("{command: x, timeout: forever}"); });
  EXPECT_NE(bad_timeout.find("deploy.production.timeout: expected a duration"), std::string::npos)
      << bad_timeout;
}

}  // namespace
}  // namespace orgd
