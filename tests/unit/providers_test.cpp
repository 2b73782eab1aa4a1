#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
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
  DeployTargetConfig config;  // by field: the struct grows (policy overrides)
  config.env = "production";
  config.provider = provider;
  config.settings = YAML::Load(yaml);
  config.line = 7;
  return config;
}

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

// The context of a call about the deploy `handle` names (poll, cancel, advance).
DeployContext with_handle(DeployContext context, const std::string& handle) {
  context.handle = handle;
  return context;
}

DeployContext context() { return {"api", "production", "abc123", "d-1", 1}; }

struct Collected {
  std::vector<std::string> lines;
  LogSink sink() {
    return [this](std::string_view line) { lines.emplace_back(line); };
  }
};

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in{path};
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// --- registry ---------------------------------------------------------------------------------

TEST(ProviderRegistryTest, BuildsLocalAndExec) {
  TempDir dir;
  ProviderRegistry registry;
  ProviderEnvironment env{dir.path()};
  EXPECT_TRUE(registry.supports("local"));
  EXPECT_TRUE(registry.supports("exec"));
  EXPECT_TRUE(registry.supports("cloudflare"));
  auto local = registry.create(provider_config("files", "local"), env, "orgd.yaml");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->name(), "files");
  EXPECT_EQ(local->type(), "local");
  auto exec = registry.create(provider_config("tasks", "exec"), env, "orgd.yaml");
  ASSERT_TRUE(exec);
  EXPECT_EQ(exec->type(), "exec");
}

TEST(ProviderRegistryTest, RejectsUnknownTypes) {
  ProviderRegistry registry;
  ProviderEnvironment env{"/tmp"};
  // synadia is built: without its settings it is their problems, not "not built yet".
  EXPECT_TRUE(registry.supports("synadia"));
  const auto synadia =
      config_error([&] { (void)registry.create(provider_config("p", "synadia"), env, "orgd.yaml"); });
  EXPECT_EQ(synadia.find("not built yet"), std::string::npos) << synadia;
  EXPECT_NE(synadia.find("providers.p.token_env"), std::string::npos) << synadia;
  const auto message =
      config_error([&] { (void)registry.create(provider_config("p", "ftp"), env, "orgd.yaml"); });
  EXPECT_NE(message.find("type 'ftp' is unknown"), std::string::npos) << message;
}

TEST(ProviderRegistryTest, AddFactoryForTests) {
  ProviderRegistry registry;
  int built = 0;
  registry.add_factory(
      "github", [&](const ProviderConfig& c, const ProviderServices& e, const std::string& f) {
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
  EXPECT_NE(bad_duration.find("orgd.yaml:1: deploy.production.duration: invalid duration"),
            std::string::npos)
      << bad_duration;
  auto unknown = config_error([&] { target("{durations: 1s}"); });
  EXPECT_NE(unknown.find("deploy.production.durations: unknown key"), std::string::npos) << unknown;
  auto not_bool = config_error([&] { target("{fail: maybe}"); });
  EXPECT_NE(not_bool.find("deploy.production.fail: expected true or false"), std::string::npos)
      << not_bool;
  auto provider_key = config_error([&] {
    (void)registry_.create(provider_config("files", "local", "{root: /x}"), env_, "orgd.yaml");
  });
  EXPECT_NE(provider_key.find("orgd.yaml:1: providers.files.root: unknown key"), std::string::npos)
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

  auto polled = t->poll(with_handle(context(), "d-1"));
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::running);
  clock_->advance(1999ms);
  EXPECT_EQ(t->poll(with_handle(context(), "d-1")).value().status, DeployStatus::running);
  clock_->advance(1ms);
  EXPECT_EQ(t->poll(with_handle(context(), "d-1")).value().status, DeployStatus::succeeded);

  auto missing = t->poll(with_handle(context(), "d-2"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
}

TEST_F(LocalProviderTest, StepsMakeAGradualRolloutWithAGatedPhaseBeforeEachNextStep) {
  auto t = target("{duration: 1s, steps: [10, 50, 100]}");
  ASSERT_TRUE(t->start(context(), {}));
  DeployContext c = with_handle(context(), "d-1");
  auto first = t->poll(c);
  ASSERT_TRUE(first);
  EXPECT_EQ(first.value().status, DeployStatus::running);
  EXPECT_EQ(first.value().detail, "10% of traffic");
  EXPECT_EQ(first.value().url, "file://" + (record_dir() / "d-1.json").string());
  clock_->advance(1s);
  auto out = t->poll(c);
  ASSERT_TRUE(out);
  EXPECT_EQ(out.value().status, DeployStatus::phase_done);
  EXPECT_EQ(out.value().phase, 1);

  c.phases_passed = 1;
  auto next = t->advance(c);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next.value().status, DeployStatus::running);
  EXPECT_EQ(next.value().detail, "50% of traffic");
  // Asked again for the same phase (orgd stopped between the two), it does not start over.
  clock_->advance(500ms);
  EXPECT_EQ(t->advance(c).value().status, DeployStatus::running);
  clock_->advance(500ms);
  EXPECT_EQ(t->poll(c).value().phase, 2) << "one second after the first advance";

  c.phases_passed = 2;
  EXPECT_EQ(t->advance(c).value().detail, "100% of traffic");
  clock_->advance(1s);
  EXPECT_EQ(t->poll(c).value().status, DeployStatus::succeeded);
  c.phases_passed = 3;
  EXPECT_EQ(t->advance(c).error().retry, Retry::permanent) << "there is no fourth step";
}

TEST_F(LocalProviderTest, StepsMustRiseToOneHundred) {
  for (const char* steps : {"[10, 5, 100]", "[10, 50]", "[0, 100]", "[ten, 100]", "[100, 100]"}) {
    auto problem = config_error([&] { target(std::string("{steps: ") + steps + "}"); });
    EXPECT_NE(problem.find("deploy.production.steps:"), std::string::npos) << steps << problem;
  }
  EXPECT_NO_THROW(target("{steps: [100]}"));
}

TEST_F(LocalProviderTest, FailTrueFails) {
  auto t = target("{duration: 500ms, fail: true}");
  ASSERT_TRUE(t->start(context(), {}));
  clock_->advance(500ms);
  auto polled = t->poll(with_handle(context(), "d-1"));
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::failed);
  EXPECT_FALSE(polled.value().error.empty());
}

TEST_F(LocalProviderTest, InstantDeployIsDoneWhenStartReturns) {
  auto t = target("{duration: 0s}");
  auto started = t->start(context(), {});
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::succeeded);
  EXPECT_EQ(started.value().handle, "d-1");
  auto failing = target("{duration: 0s, fail: true}");
  auto failed = failing->start(context(), {});
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed.value().status, DeployStatus::failed);
  EXPECT_NE(failed.value().error.find("fail: true"), std::string::npos);
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

TEST_F(LocalProviderTest, ExecutionsLogHasOneLinePerStart) {
  auto t = target("{}");
  ASSERT_TRUE(t->start(context(), {}));
  auto retry = context();
  retry.attempt = 2;
  ASSERT_TRUE(t->start(retry, {}));

  const auto lines = read_lines(record_dir() / "executions.log");
  ASSERT_EQ(lines.size(), 2u);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto entry = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(entry.is_object()) << lines[i];
    EXPECT_EQ(entry["deploy_id"], "d-1");
    EXPECT_EQ(entry["attempt"], static_cast<int>(i) + 1);
    EXPECT_TRUE(entry["started_at"].is_string());
  }
}

TEST_F(LocalProviderTest, ConcurrentStartsNeverInterleaveExecutionLines) {
  auto t = target("{}");
  constexpr int kThreads = 8, kStartsEach = 25;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kStartsEach; ++j) {
        auto c = context();
        c.deploy_id = "d-" + std::to_string(i) + "-" + std::to_string(j);
        EXPECT_TRUE(t->start(c, {}));
      }
    });
  }
  for (auto& thread : threads) thread.join();

  std::set<std::string> ids;
  for (const auto& line : read_lines(record_dir() / "executions.log")) {
    const auto entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(entry.is_object() && entry["deploy_id"].is_string()) << line;
    ids.insert(entry["deploy_id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kThreads * kStartsEach));
  EXPECT_EQ(dynamic_cast<LocalDeployTarget&>(*t).executions(), kThreads * kStartsEach);
}

TEST_F(LocalProviderTest, RecoverWithoutRecordIsNotFound) {
  auto t = target("{}");
  auto recovered = t->recover(context());
  ASSERT_FALSE(recovered);
  EXPECT_EQ(recovered.error().code, ErrorCode::not_found);
}

TEST_F(LocalProviderTest, RecoverAfterRestartAnswersFromTheRecord) {
  ASSERT_TRUE(target("{duration: 2s}")->start(context(), {}));
  auto restarted = target("{duration: 2s}");  // a new object: nothing in memory

  auto recovered = restarted->recover(context());
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(recovered.value().status, DeployStatus::running);
  EXPECT_EQ(recovered.value().handle, "d-1");
  clock_->advance(2s);
  EXPECT_EQ(restarted->recover(context()).value().status, DeployStatus::succeeded);
  EXPECT_EQ(dynamic_cast<LocalDeployTarget&>(*restarted).executions(), 0);

  // Another attempt of the same deploy never started, even though the deploy has a record.
  auto retry = context();
  retry.attempt = 2;
  auto other = restarted->recover(retry);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::not_found);

  auto bad = context();
  bad.env = "..";
  EXPECT_EQ(restarted->recover(bad).error().code, ErrorCode::invalid_argument);
}

// --- exec -------------------------------------------------------------------------------------

class ExecProviderTest : public ::testing::Test {
 protected:
  std::unique_ptr<DeployTarget> target(const std::string& yaml) {
    ProviderEnvironment environment;
    environment.data_dir = dir_.path();
    environment.environment = environment_;
    provider_ = registry_.create(provider_config("tasks", "exec"), environment, "orgd.yaml");
    return provider_->make_deploy_target(target_config("tasks", yaml), "orgd.yaml");
  }

  // orgd's environment as the provider sees it (injected, like the daemon does).
  Environment environment_{{{"PATH", "/usr/bin:/bin"}}};

  fs::path state(const std::string& name) const {
    return fs::path{dir_.path()} / "exec" / "api" / "production" / name;
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
  auto polled = t->poll(with_handle(context(), result.value().handle));
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::succeeded);
}

// Sets variables in the real process environment for one test, restoring them afterwards.
class ScopedProcessEnv {
 public:
  explicit ScopedProcessEnv(const std::map<std::string, std::string>& vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>{old} : std::nullopt);
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedProcessEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::map<std::string, std::string> parse_env_dump(const fs::path& file) {
  std::map<std::string, std::string> vars;
  for (const auto& line : read_lines(file)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) vars[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return vars;
}

// Credentials in orgd's environment (injected and real) never reach a command: it gets the
// allow-list, the deploy variables and what the target names under `env:`.
TEST_F(ExecProviderTest, CommandGetsOnlyTheAllowListAndItsEnvSetting) {
  const std::map<std::string, std::string> canaries = {{"NATS_TOKEN", "canary-nats-token"},
                                                       {"NATS_JWT", "canary-nats-jwt"},
                                                       {"NATS_NKEY_SEED", "canary-nkey-seed"},
                                                       {"GITHUB_TOKEN", "canary-github-token"},
                                                       {"ORGD_MASTER_KEY", "canary-master-key"}};
  ScopedProcessEnv process{{{"NATS_TOKEN", "canary-process-nats"},
                            {"GITHUB_TOKEN", "canary-process-github"},
                            {"ORGD_MASTER_KEY", "canary-process-master"}}};
  for (const auto& [name, value] : canaries) environment_.set(name, value);
  environment_.set("HOME", "/home/orgd");
  environment_.set("LANG", "C.UTF-8");
  environment_.set("TZ", "UTC");
  environment_.set("DEPLOY_REGION", "eu-west");
  const auto dump = fs::path{dir_.path()} / "env.txt";
  auto t = target("{command: 'env > " + dump.string() + "', env: [DEPLOY_REGION]}");
  auto result = t->start(context(), {});
  ASSERT_TRUE(result);
  ASSERT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;

  std::string text;
  for (const auto& line : read_lines(dump)) text += line + "\n";
  EXPECT_EQ(text.find("canary"), std::string::npos) << text;
  const auto vars = parse_env_dump(dump);
  EXPECT_EQ(vars.count("GITHUB_TOKEN"), 0u) << text;
  EXPECT_EQ(vars.count("ORGD_MASTER_KEY"), 0u) << text;
  EXPECT_EQ(vars.at("PATH"), "/usr/bin:/bin");
  EXPECT_EQ(vars.at("HOME"), "/home/orgd");
  EXPECT_EQ(vars.at("LANG"), "C.UTF-8");
  EXPECT_EQ(vars.at("TZ"), "UTC");
  EXPECT_EQ(vars.at("DEPLOY_REGION"), "eu-west");
  EXPECT_EQ(vars.at("ORGD_REPO"), "api");
  EXPECT_EQ(vars.at("ORGD_DEPLOY_ID"), "d-1");
  // What the shell adds itself, and nothing else.
  const std::set<std::string> allowed = {
      "PATH",           "HOME",          "LANG", "TZ",     "ORGD_REPO", "ORGD_ENV", "ORGD_REF",
      "ORGD_DEPLOY_ID", "DEPLOY_REGION", "PWD",  "OLDPWD", "SHLVL",     "_"};
  for (const auto& [name, value] : vars) EXPECT_EQ(allowed.count(name), 1u) << name;
}

TEST_F(ExecProviderTest, EnvSettingIsChecked) {
  auto unset = config_error([&] { target("{command: 'true', env: [NOT_SET_ANYWHERE]}"); });
  EXPECT_NE(unset.find("orgd.yaml:1: deploy.production.env: NOT_SET_ANYWHERE is not set in "
                       "orgd's environment"),
            std::string::npos)
      << unset;
  auto not_a_list = config_error([&] { target("{command: 'true', env: PATH}"); });
  EXPECT_NE(not_a_list.find("deploy.production.env: expected a list"), std::string::npos)
      << not_a_list;
  auto bad_name = config_error([&] { target("{command: 'true', env: ['A=B']}"); });
  EXPECT_NE(bad_name.find("deploy.production.env: 'A=B' is not a variable name"), std::string::npos)
      << bad_name;
  auto ours = config_error([&] { target("{command: 'true', env: [ORGD_REF]}"); });
  EXPECT_NE(ours.find("deploy.production.env: ORGD_REF is set by orgd for each deploy"),
            std::string::npos)
      << ours;
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
  EXPECT_EQ(result.value().error, "exit code 3: oops");
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "oops");
  EXPECT_EQ(t->poll(with_handle(context(), "d-1")).value().error, "exit code 3: oops");
}

// The failure says why: the command's last output line, also when the command printed more
// lines than are passed on, and bounded.
TEST_F(ExecProviderTest, FailureCarriesTheLastOutputLine) {
  auto missing = target("{command: 'echo starting; deploy-script-that-does-not-exist.sh'}");
  auto result = missing->start(context(), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::failed);
  EXPECT_EQ(result.value().error.rfind("exit code 127: ", 0), 0u) << result.value().error;
  EXPECT_NE(result.value().error.find("deploy-script-that-does-not-exist.sh: not found"),
            std::string::npos)
      << result.value().error;

  auto chatty = target(
      "{command: 'i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; echo; exit 4'}");
  EXPECT_EQ(chatty->start(context(), {}).value().error, "exit code 4: line1999");

  auto long_line = target("{command: 'head -c 5000 /dev/zero | tr \"\\\\0\" x; exit 5'}");
  const auto error = long_line->start(context(), {}).value().error;
  EXPECT_EQ(error.rfind("exit code 5: xxx", 0), 0u) << error;
  EXPECT_LE(error.size(), std::string{"exit code 5: "}.size() + ExecDeployTarget::kMaxErrorLine +
                              std::string{"…"}.size());

  auto timed_out = target("{command: 'echo waiting for the lock; sleep 5', timeout: 200ms}");
  EXPECT_EQ(timed_out->start(context(), {}).value().error,
            "timed out after 200ms: waiting for the lock");
}

// --check-config builds the targets: a workdir that is not there is found before a deploy.
TEST_F(ExecProviderTest, MissingWorkdirIsAConfigError) {
  const auto gone = fs::path{dir_.path()} / "not-there";
  auto message = config_error([&] { target("{command: 'true', workdir: " + gone.string() + "}"); });
  EXPECT_NE(
      message.find("orgd.yaml:1: deploy.production.workdir: no such directory: " + gone.string()),
      std::string::npos)
      << message;
  const auto file = fs::path{dir_.path()} / "a-file";
  std::ofstream{file} << "x";
  auto not_dir = config_error([&] { target("{command: 'true', workdir: " + file.string() + "}"); });
  EXPECT_NE(not_dir.find("deploy.production.workdir: not a directory: " + file.string()),
            std::string::npos)
      << not_dir;
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
  EXPECT_EQ(log.lines.back(), "… output truncated: 4000 more lines dropped");
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

// A cut line never ends inside a UTF-8 sequence, and a character that fits is kept.
TEST_F(ExecProviderTest, CutsLinesAtCharacterBoundaries) {
  auto t = target(
      "{command: 'head -c 999 /dev/zero | tr \"\\\\0\" x; printf \"\\\\303\\\\251\\\\n\"; "
      "head -c 998 /dev/zero | tr \"\\\\0\" x; printf \"\\\\303\\\\251tail\\\\n\"'}");
  Collected log;
  ASSERT_TRUE(t->start(context(), log.sink()));
  ASSERT_EQ(log.lines.size(), 2u);
  EXPECT_EQ(log.lines[0], std::string(999, 'x'));
  EXPECT_EQ(log.lines[1], std::string(998, 'x') + "\xc3\xa9");
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
  EXPECT_NE(bad_timeout.find("deploy.production.timeout: invalid duration"), std::string::npos)
      << bad_timeout;
}

TEST_F(ExecProviderTest, PassesLinesOnWhileTheCommandRuns) {
  // The command cannot end before the test has seen its first line and created `go`.
  const auto go = fs::path{dir_.path()} / "go";
  auto t = target("{command: 'echo ready; while [ ! -e " + go.string() +
                  " ]; do sleep 0.01; done; echo done', timeout: 60s}");
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> lines;
  std::optional<Result<DeployProgress>> result;
  std::thread runner{[&] {
    auto r = t->start(context(), [&](std::string_view line) {
      std::lock_guard lock{mutex};
      lines.emplace_back(line);
      changed.notify_all();
    });
    std::lock_guard lock{mutex};
    result.emplace(std::move(r));
    changed.notify_all();
  }};
  bool line_while_running = false;
  {
    std::unique_lock lock{mutex};
    changed.wait_for(lock, 20s, [&] { return !lines.empty() || result.has_value(); });
    line_while_running = !lines.empty() && !result.has_value();
  }
  // Meanwhile the deploy shows as running, to poll and to recover alike.
  const auto polled = t->poll(with_handle(context(), "d-1"));
  const auto recovered = t->recover(context());
  std::ofstream{go}.flush();
  runner.join();

  EXPECT_TRUE(line_while_running) << "no output reached the sink while the command ran";
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::running);
  ASSERT_TRUE(recovered);
  EXPECT_EQ(recovered.value().status, DeployStatus::running);
  ASSERT_TRUE(result.has_value() && result->ok());
  EXPECT_EQ(result->value().status, DeployStatus::succeeded) << result->value().error;
  EXPECT_EQ(lines, (std::vector<std::string>{"ready", "done"}));
}

TEST_F(ExecProviderTest, WritesTheStartedMarkerBeforeTheCommandRuns) {
  auto t = target("{command: 'test -e " + state("d-1.1.started").string() + "'}");
  auto result = t->start(context(), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded) << result.value().error;
}

TEST_F(ExecProviderTest, ResultSurvivesARestart) {
  ASSERT_TRUE(target("{command: 'exit 3'}")->start(context(), {}));
  auto second = context();
  second.deploy_id = "d-2";
  ASSERT_TRUE(target("{command: 'true'}")->start(second, {}));

  std::ifstream in{state("d-1.1.json")};
  ASSERT_TRUE(in);
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(record.is_object());
  EXPECT_EQ(record["exit_code"], 3);
  EXPECT_EQ(record["status"], "failed");
  EXPECT_EQ(record["error"], "exit code 3");
  EXPECT_TRUE(record["finished_at"].is_string());

  // A new target on the same data dir: nothing in memory, only the files.
  auto restarted = target("{command: 'exit 99'}");
  auto failed = restarted->recover(context());
  ASSERT_TRUE(failed) << failed.error().message;
  EXPECT_EQ(failed.value().status, DeployStatus::failed);
  EXPECT_EQ(failed.value().error, "exit code 3");
  EXPECT_EQ(failed.value().handle, "d-1");
  auto polled = restarted->poll(with_handle(context(), "d-1"));
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().error, "exit code 3");
  auto succeeded = restarted->recover(second);
  ASSERT_TRUE(succeeded);
  EXPECT_EQ(succeeded.value().status, DeployStatus::succeeded);

  auto never = context();
  never.attempt = 2;
  EXPECT_EQ(restarted->recover(never).error().code, ErrorCode::not_found);
  EXPECT_EQ(restarted->poll(with_handle(never, "d-1")).error().code, ErrorCode::not_found);
}

TEST_F(ExecProviderTest, StartedWithoutResultRecoversAsInterrupted) {
  // What a SIGKILLed orgd leaves behind: the marker, and no result.
  fs::create_directories(state(""));
  std::ofstream{state("d-1.1.started")} << "{}\n";
  auto t = target("{command: 'true'}");
  auto recovered = t->recover(context());
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_EQ(recovered.value().status, DeployStatus::interrupted);
  EXPECT_EQ(recovered.value().error, "interrupted: orgd stopped while the command ran");
  EXPECT_EQ(recovered.value().handle, "d-1");
}

TEST_F(ExecProviderTest, RefusesPathEscapesBeforeRunning) {
  const auto ran = fs::path{dir_.path()} / "ran";
  auto t = target("{command: 'touch " + ran.string() + "'}");
  auto bad = context();
  bad.deploy_id = "../../x";
  auto result = t->start(bad, {});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(fs::exists(ran));
  EXPECT_EQ(t->recover(bad).error().code, ErrorCode::invalid_argument);
}

TEST_F(ExecProviderTest, WithoutStateDirKeepsNoFiles) {
  ExecDeployTarget::Settings settings;
  settings.command = "true";
  ExecDeployTarget t{settings};
  auto result = t.start(context(), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result.value().status, DeployStatus::succeeded);
  EXPECT_EQ(t.poll(with_handle(context(), "d-1")).value().status, DeployStatus::succeeded);
  EXPECT_EQ(ExecDeployTarget{settings}.recover(context()).error().code, ErrorCode::not_found);
  EXPECT_TRUE(fs::is_empty(dir_.path()));
}

// Plays orgd in a child process: it runs the command, reports the command's pid, and is then
// SIGKILLed. The command must end with it instead of sleeping on for a minute.
TEST_F(ExecProviderTest, CommandDiesWithTheProcessThatRanIt) {
  auto t = target("{command: 'echo $$; exec sleep 60', timeout: 5m}");
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t runner = ::fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {
    ::close(report[0]);
    const int out = report[1];
    (void)t->start(context(), [out](std::string_view line) {
      std::string text{line};
      text += '\n';
      [[maybe_unused]] auto n = ::write(out, text.data(), text.size());
    });
    ::_exit(0);
  }
  ::close(report[1]);

  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd readable{report[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&readable, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[64];
    const ssize_t n = ::read(report[0], buffer, sizeof buffer);
    if (n <= 0) break;
    got.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(report[0]);
  const pid_t command = got.find('\n') == std::string::npos ? 0 : std::atoi(got.c_str());
  const int pidfd = command > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, command, 0)) : -1;
  ::kill(runner, SIGKILL);
  int status = 0;
  ::waitpid(runner, &status, 0);
  ASSERT_GT(command, 0) << "the command's pid never arrived: '" << got << "'";
  ASSERT_GE(pidfd, 0) << "pidfd_open: " << std::strerror(errno);

  pollfd ended{pidfd, POLLIN, 0};
  const int ready = ::poll(&ended, 1, 20'000);
  ::close(pidfd);
  if (ready != 1) ::kill(command, SIGKILL);
  EXPECT_EQ(ready, 1) << "the command outlived the process that ran it";
}

}  // namespace
}  // namespace orgd
