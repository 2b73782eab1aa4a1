// DeployRun in-process against a real nats-server, with scripted deploy targets standing in for
// providers: resume after a crash (interrupted and failed attempts), provider calls that hang,
// the bounded executor, and what a waiting health gate shows.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/plugin/registry.hpp"
#include "orgd/v1/deploy.pb.h"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using deploy::Orchestrator;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;
using v1::DeployRecord;
using v1::DeployStep;

// A deploy target whose every call the test scripts. Calls without a script behave like an
// instant, successful deploy. A call can be made to hang until release() (or the test's end).
class ScriptedTarget {
 public:
  using Call = std::function<Result<DeployProgress>(const DeployContext&)>;

  Call on_start, on_poll, on_recover, on_rollback;
  std::atomic<bool> can_roll_back{true};
  std::atomic<bool> hang_start{false};

  Result<DeployProgress> start(const DeployContext& context) {
    {
      std::lock_guard lock(mutex_);
      start_attempts_.push_back(context.attempt);
    }
    if (hang_start.load()) {
      std::unique_lock lock(mutex_);
      hung_++;
      released_cv_.wait(lock, [&] { return released_; });
      hung_--;
    }
    if (on_start) return on_start(context);
    return DeployProgress{DeployStatus::succeeded, context.deploy_id, {}};
  }
  Result<DeployProgress> poll(const DeployContext& context, const std::string& handle) {
    if (on_poll) return on_poll(context);
    return DeployProgress{DeployStatus::succeeded, handle, {}};
  }
  Result<DeployProgress> recover(const DeployContext& context) {
    {
      std::lock_guard lock(mutex_);
      recover_attempts_.push_back(context.attempt);
    }
    if (on_recover) return on_recover(context);
    return not_found("no record of it");
  }
  Result<DeployProgress> rollback(const DeployContext& context) {
    if (on_rollback) return on_rollback(context);
    return DeployProgress{DeployStatus::succeeded, context.deploy_id, {}};
  }

  std::vector<int> start_attempts() {
    std::lock_guard lock(mutex_);
    return start_attempts_;
  }
  std::vector<int> recover_attempts() {
    std::lock_guard lock(mutex_);
    return recover_attempts_;
  }
  int hung() {
    std::lock_guard lock(mutex_);
    return hung_;
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
  }

 private:
  std::mutex mutex_;  // guards everything below
  std::condition_variable released_cv_;
  bool released_ = false;
  int hung_ = 0;
  std::vector<int> start_attempts_;
  std::vector<int> recover_attempts_;
};

using Scripts = std::map<std::string, std::shared_ptr<ScriptedTarget>>;

// The DeployTarget the inventory owns, forwarding to the test's script named by `script:`.
class ForwardingTarget final : public DeployTarget {
 public:
  explicit ForwardingTarget(std::shared_ptr<ScriptedTarget> script) : script_(std::move(script)) {}
  Result<DeployProgress> start(const DeployContext& c, const LogSink&) override {
    return script_->start(c);
  }
  Result<DeployProgress> poll(const DeployContext& c, const std::string& handle) override {
    return script_->poll(c, handle);
  }
  Result<DeployProgress> rollback(const DeployContext& c, const LogSink&) override {
    return script_->rollback(c);
  }
  bool can_rollback() const override { return script_->can_roll_back.load(); }
  Result<DeployProgress> recover(const DeployContext& c) override { return script_->recover(c); }

 private:
  std::shared_ptr<ScriptedTarget> script_;
};

class ScriptedProvider final : public Provider {
 public:
  ScriptedProvider(std::string name, Scripts& scripts)
      : Provider(std::move(name), "remote"), scripts_(scripts) {}
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string&) override {
    const YAML::Node& settings = target.settings;
    auto& script = scripts_[settings["script"].as<std::string>()];
    if (!script) script = std::make_shared<ScriptedTarget>();
    return std::make_unique<ForwardingTarget>(script);
  }

 private:
  Scripts& scripts_;
};

// Events as the orchestrator publishes them, decoded.
class CapturingPublisher final : public Publisher {
 public:
  Result<Ok> publish(const BusMessage& message) override {
    v1::DeployEvent event;
    if (decode(message.data, Encoding::json, event, 1 << 20)) {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(event));
    }
    return Ok{};
  }
  std::vector<v1::DeployEvent> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  // "kind repo" of every event but log lines.
  std::vector<std::string> kinds() {
    std::vector<std::string> out;
    for (const auto& e : events()) {
      if (e.kind() == "log") continue;
      out.push_back(e.kind() + (e.step().repo().empty() ? "" : " " + e.step().repo()));
    }
    return out;
  }
  bool has(const std::string& kind_and_repo) {
    const auto seen = kinds();
    return std::find(seen.begin(), seen.end(), kind_and_repo) != seen.end();
  }

 private:
  std::mutex mutex_;  // guards events_
  std::vector<v1::DeployEvent> events_;
};

class ScriptedHealth final : public deploy::HealthGateSource {
 public:
  deploy::GateCheck check(const std::string&, Clock::time_point) const override {
    std::lock_guard lock(mutex_);
    return check_;
  }
  void set(deploy::GateCheck check) {
    std::lock_guard lock(mutex_);
    check_ = std::move(check);
  }

 private:
  mutable std::mutex mutex_;  // guards check_
  deploy::GateCheck check_{true, false, {}, {}};
};

class DeployRunTest : public ::testing::Test {
 protected:
  DeployRunTest() {
    EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK);
    registry_.add_factory(
        "remote", [this](const ProviderConfig& c, const ProviderEnvironment&, const std::string&) {
          return std::make_unique<ScriptedProvider>(c.name, scripts_);
        });
  }

  ~DeployRunTest() override {
    for (auto& [name, script] : scripts_) script->release();
    if (orchestrator_) orchestrator_->stop(5s);
    orchestrator_.reset();
    jsCtx_Destroy(js_);
  }

  ScriptedTarget& script(const std::string& name) {
    auto& s = scripts_[name];
    if (!s) s = std::make_shared<ScriptedTarget>();
    return *s;
  }

  // `repos`: the repos: block; `deploy`: extra lines of the deploy: block.
  std::string config(const std::string& repos, const std::string& deploy = "") {
    return "org: acme\n"
           "nats:\n  urls: [" +
           server_.url() + "]\n  data_dir: " + dir_.path().string() +
           "\n"
           "http:\n  enabled: false\n"
           "log:\n  level: warn\n"
           "deploy:\n  lease_ttl: 2s\n  retry_backoff: 50ms\n  health_gate: false\n" +
           deploy +
           "providers:\n  scripted: {type: remote}\n  shell: {type: exec}\n"
           "repos:\n" +
           repos;
  }

  static std::string repo(const std::string& name, const std::string& target_extra = "",
                          const std::string& depends_on = "") {
    return "  " + name + ":\n" +
           (depends_on.empty() ? "" : "    depends_on: [" + depends_on + "]\n") +
           "    deploy:\n      dev: {provider: scripted, script: " + name + target_extra + "}\n";
  }

  void start(const std::string& yaml, deploy::OrchestratorOptions options = {}) {
    const Config loaded = load_config_string(yaml, "test.yaml", Environment());
    ProviderEnvironment environment;
    environment.data_dir = dir_.path().string();
    inventory_ = deploy::Inventory::build(loaded, registry_, environment);
    options.instance_id = "orgd-test";
    options.prefix = "org.acme";
    options.poll_interval = 20ms;
    orchestrator_ =
        std::make_unique<Orchestrator>(options, inventory_, publisher_, health_, metrics_, clock_);
    auto attached = orchestrator_->attach(
        [js = js_](const BucketSpec& spec) { return KvBucket::open(js, spec); }, js_);
    ASSERT_TRUE(attached) << attached.error().message;
  }

  // What a crashed orgd leaves behind: a running deploy whose step `repo` was started (its
  // attempt persisted) with no handle, its runner's lease gone. Written before start().
  std::string left_by_a_crash(const std::string& repo_name, const std::string& env = "dev") {
    auto open = [&](const char* name, Duration ttl) {
      auto bucket = KvBucket::open(js_, {name, "test", ttl, 1, 1});
      EXPECT_TRUE(bucket) << bucket.error().message;
      return std::move(bucket.value());
    };
    deploy::DeployStore store(open(deploy::kDeploysBucket, Duration{0}),
                              open(deploy::kLocksBucket, Duration{0}),
                              open(deploy::kLeasesBucket, std::chrono::seconds{2}));
    const auto now = clock_.now();
    const std::string id = deploy::new_deploy_id(now);
    v1::DeployRequest request;
    request.set_env(env);
    request.add_repos(repo_name);
    auto record = deploy::new_record(id, {{repo_name}}, request, deploy::FailurePolicy::stop, now);
    deploy::mark_running(record, "crashed-orgd", now);
    deploy::mark_started(record, repo_name, "scripted", now);
    EXPECT_TRUE(store.acquire_locks({repo_name}, env, id));
    EXPECT_TRUE(store.mark_active(id));
    EXPECT_TRUE(store.create(record));
    return id;
  }

  std::optional<DeployRecord> get(const std::string& id) {
    v1::DeployGetRequest request;
    request.set_deploy_id(id);
    auto record = orchestrator_->get(request);
    if (!record) return std::nullopt;
    return record.value();
  }

  DeployRecord wait_finished(const std::string& id, std::chrono::milliseconds deadline = 30s) {
    DeployRecord last;
    const bool done = wait_until(
        [&] {
          auto record = get(id);
          if (!record) return false;
          last = *record;
          return deploy::is_terminal(last.state());
        },
        deadline);
    EXPECT_TRUE(done) << "deploy " << id << " did not finish: " << last.DebugString();
    return last;
  }

  std::string deploy(const std::vector<std::string>& repos) {
    v1::DeployRequest request;
    request.set_env("dev");
    for (const auto& r : repos) request.add_repos(r);
    auto accepted = orchestrator_->deploy(request);
    EXPECT_TRUE(accepted) << accepted.error().message;
    return accepted ? accepted.value().deploy_id() : std::string{};
  }

  static const DeployStep& step(const DeployRecord& record, const std::string& repo) {
    const DeployStep* found = deploy::find_step(record, repo);
    if (found == nullptr) {
      ADD_FAILURE() << "no step " << repo;
      static const DeployStep none;
      return none;
    }
    return *found;
  }

  NatsServer server_;
  TempDir dir_;
  testing::NatsConnectionPtr client_ = testing::connect_client(server_.url());
  jsCtx* js_ = nullptr;
  Scripts scripts_;
  ProviderRegistry registry_;
  CapturingPublisher publisher_;
  ScriptedHealth health_;
  MetricsRegistry metrics_;
  SystemClock clock_;
  std::shared_ptr<const deploy::Inventory> inventory_;
  std::unique_ptr<Orchestrator> orchestrator_;
};

// ---- A step interrupted by orgd's crash --------------------------------------------------------

TEST_F(DeployRunTest, AStepInterruptedByACrashRunsAgainWithoutUsingARetry) {
  // retries: 0 — an attempt the crash ended must not be the step's only chance.
  auto& api = script("api");
  api.on_recover = [](const DeployContext& c) -> Result<DeployProgress> {
    return DeployProgress{DeployStatus::interrupted, c.deploy_id, "interrupted: orgd stopped"};
  };
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2) << record.DebugString();
  EXPECT_EQ(step(record, "api").interrupted_attempts(), 1) << record.DebugString();
  EXPECT_EQ(api.recover_attempts(), std::vector<int>{1});
  EXPECT_EQ(api.start_attempts(), std::vector<int>{2});
  EXPECT_TRUE(publisher_.has("step_interrupted api"));
}

TEST_F(DeployRunTest, AStepWhoseProviderSaysItFailedStillFailsOnResume) {
  auto& api = script("api");
  api.on_recover = [](const DeployContext& c) -> Result<DeployProgress> {
    return DeployProgress{DeployStatus::failed, c.deploy_id, "the release was rejected"};
  };
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 1);
  EXPECT_EQ(step(record, "api").interrupted_attempts(), 0);
  EXPECT_EQ(step(record, "api").error(), "the release was rejected");
  EXPECT_TRUE(api.start_attempts().empty()) << "a failed deploy is not started again";
}

TEST_F(DeployRunTest, AProviderThatCannotAnswerYetIsAskedAgainOnResume) {
  // Right after a crash the provider's API may be unreachable for a moment: that says nothing
  // about the deploy, so it is no reason to fail the step.
  auto& api = script("api");
  auto calls = std::make_shared<std::atomic<int>>(0);
  api.on_recover = [calls](const DeployContext& c) -> Result<DeployProgress> {
    if (++*calls <= 2) return unavailable("provider API unreachable");
    return DeployProgress{DeployStatus::interrupted, c.deploy_id, "interrupted: orgd stopped"};
  };
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(calls->load(), 3);
  EXPECT_EQ(api.start_attempts(), std::vector<int>{2});
}

TEST_F(DeployRunTest, AnExecCommandThatDiedWithOrgdRunsAgainOnResume) {
  // The exec provider's own marker: attempt 1 started, no result (orgd died, the command with
  // it). The resumed deploy runs the command again, as attempt 2.
  const fs::path out = fs::path(dir_.path()) / "ran";
  const std::string id = left_by_a_crash("api");
  const fs::path state = fs::path(dir_.path()) / "exec" / "api" / "dev";
  fs::create_directories(state);
  std::ofstream(state / (id + ".1.started")) << "{}\n";
  start(config(
      "  api:\n    deploy:\n      dev: {provider: shell, command: 'echo $ORGD_DEPLOY_ID >> " +
      out.string() + "'}\n"));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2);
  EXPECT_EQ(step(record, "api").interrupted_attempts(), 1);
  EXPECT_EQ(testing::read_file(out), id + "\n") << "the command ran once after the crash";
}

// ---- The bounded executor and provider calls under a deadline ----------------------------------

std::size_t threads_of_this_process() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

TEST_F(DeployRunTest, ManyConcurrentDeploysDoNotTakeAThreadEach) {
  // 40 deploys whose steps stay running (polled) until released: before, each deploy had a
  // thread and each running step another.
  constexpr int kDeploys = 40;
  std::string repos;
  for (int i = 0; i < kDeploys; ++i) {
    const std::string name = "r" + std::to_string(i);
    repos += repo(name);
    auto& target = script(name);
    target.on_start = [](const DeployContext& c) -> Result<DeployProgress> {
      return DeployProgress{DeployStatus::running, c.deploy_id, {}};
    };
  }
  std::atomic<bool> done{false};
  for (auto& [name, target] : scripts_) {
    target->on_poll = [&done](const DeployContext& c) -> Result<DeployProgress> {
      return DeployProgress{
          done ? DeployStatus::succeeded : DeployStatus::running, c.deploy_id, {}};
    };
  }
  deploy::OrchestratorOptions options;
  options.executor_threads = 2;
  options.provider_threads = 4;
  start(config(repos, "  max_active: 50\n"), options);
  const std::size_t before = threads_of_this_process();
  std::vector<std::string> ids;
  for (int i = 0; i < kDeploys; ++i) ids.push_back(deploy({"r" + std::to_string(i)}));
  // Every step is running (started, now polled): the moment the old design had most threads.
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& id : ids) {
          auto record = get(id);
          if (!record || record->steps(0).state() != DeployStep::running) return false;
        }
        return true;
      },
      30s));
  const std::size_t during = threads_of_this_process();
  EXPECT_LE(during, before + options.provider_threads)
      << "threads before the deploys: " << before << ", while " << kDeploys << " run: " << during;
  done = true;
  for (const auto& id : ids) EXPECT_EQ(wait_finished(id).state(), DeployRecord::succeeded);
}

TEST_F(DeployRunTest, AHungProviderStartFailsTheAttemptAtItsDeadlineAndIsRetried) {
  auto& api = script("api");
  api.hang_start = true;
  start(config(repo("api", ", step_timeout: 1s, retries: 1")));
  const std::string id = deploy({"api"});
  const auto record = wait_finished(id, 60s);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2) << record.DebugString();
  EXPECT_EQ(step(record, "api").error(), "start did not return within 1s");
  EXPECT_TRUE(publisher_.has("step_retrying api"));
  EXPECT_EQ(api.start_attempts(), (std::vector<int>{1, 2}));
  // Both calls still hang: their threads are counted, not forgotten.
  EXPECT_EQ(metrics_.gauge("orgd_provider_calls_hung", "").value(), 2);
}

TEST_F(DeployRunTest, StopWhileAProviderHangsIsBoundedAndHandsTheDeployOver) {
  auto& api = script("api");
  api.hang_start = true;
  start(config(repo("api")));
  const std::string id = deploy({"api"});
  ASSERT_TRUE(wait_until([&] { return api.hung() == 1; }, 20s));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    orchestrator_->stop(1s);
    stopped = true;
  });
  // Generous for a loaded machine; without a bound it would wait for the provider forever.
  const bool bounded = wait_until([&] { return stopped.load(); }, 15s);
  if (!bounded) api.release();
  stopper.join();
  EXPECT_TRUE(bounded) << "stop() waited for the hung provider call";
  // The runner's lease is released: another replica resumes the deploy at once.
  auto bucket = KvBucket::open(js_, {deploy::kLeasesBucket, "test", std::chrono::seconds{2}, 1, 1});
  ASSERT_TRUE(bucket);
  auto lease = bucket.value()->get(deploy::DeployStore::deploy_lease(id));
  ASSERT_TRUE(lease);
  EXPECT_FALSE(lease.value().has_value());
}

TEST_F(DeployRunTest, StopWhileNatsIsDownIsBounded) {
  // The step's record writes and lease renewals wait on KV calls that NATS cannot answer.
  auto& api = script("api");
  api.on_start = [](const DeployContext& c) -> Result<DeployProgress> {
    return DeployProgress{DeployStatus::running, c.deploy_id, {}};
  };
  auto finished = std::make_shared<std::atomic<bool>>(false);
  api.on_poll = [finished](const DeployContext& c) -> Result<DeployProgress> {
    return DeployProgress{
        *finished ? DeployStatus::succeeded : DeployStatus::running, c.deploy_id, {}};
  };
  start(config(repo("api")));
  const std::string id = deploy({"api"});
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get(id);
        return record && !step(*record, "api").handle().empty();
      },
      20s));
  server_.stop();
  *finished = true;  // its success now has to be written, and cannot be
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    orchestrator_->stop(1s);
    stopped = true;
  });
  const bool bounded = wait_until([&] { return stopped.load(); }, 20s);
  if (!bounded) server_.start();
  stopper.join();
  EXPECT_TRUE(bounded) << "stop() waited for NATS";
}

TEST_F(DeployRunTest, AnExecCommandIsNotAbandonedBeforeItsOwnTimeout) {
  // step_timeout is shorter than the command, whose own timeout (10m) bounds the call: a new
  // attempt beside the running command would run it twice at once.
  const fs::path out = fs::path(dir_.path()) / "ran";
  start(
      config("  api:\n    deploy:\n      dev: {provider: shell, step_timeout: 1s, retries: 1, "
             "command: 'sleep 2; echo $ORGD_DEPLOY_ID >> " +
             out.string() + "'}\n"));
  const std::string id = deploy({"api"});
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 1) << record.DebugString();
  EXPECT_EQ(testing::read_file(out), id + "\n") << "the command ran once";
}

// ---- What a waiting health gate and a step that cannot roll back show --------------------------

constexpr const char* kGate = ", health_gate: {enabled: true, timeout: 10m, soak: 0s}";

deploy::GateCheck unhealthy(std::vector<std::string> services) {
  deploy::GateCheck check;
  check.detail = "http no report since deploy";
  check.unhealthy = std::move(services);
  return check;
}

TEST_F(DeployRunTest, AStepWaitingForItsHealthGateSaysWhatItWaitsFor) {
  health_.set(unhealthy({"http"}));
  start(config(repo("api", kGate)));
  const std::string id = deploy({"api"});
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get(id);
        return record && step(*record, "api").waiting_for() == "health: api/http";
      },
      20s));
  // The record is written before its event is published: wait for the event too.
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& e : publisher_.events()) {
          if (e.kind() == "health_gate_waiting" && e.step().repo() == "api" &&
              e.step().waiting_for() == "health: api/http") {
            return true;
          }
        }
        return false;
      },
      20s));
  health_.set({true, false, {}, {}});
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded);
  EXPECT_TRUE(step(record, "api").waiting_for().empty()) << record.DebugString();
  EXPECT_TRUE(publisher_.has("health_gate_passed api"));
}

TEST_F(DeployRunTest, CancelEndsAHealthGateWait) {
  // The gate would wait 10 minutes.
  health_.set(unhealthy({"http"}));
  start(config(repo("api", kGate)));
  const std::string id = deploy({"api"});
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get(id);
        return record && !step(*record, "api").waiting_for().empty();
      },
      20s));
  v1::DeployCancelRequest cancel;
  cancel.set_deploy_id(id);
  cancel.set_reason("operator");
  ASSERT_TRUE(orchestrator_->cancel(cancel));
  const auto record = wait_finished(id, 20s);
  EXPECT_EQ(record.state(), DeployRecord::cancelled) << record.DebugString();
  EXPECT_EQ(step(record, "api").state(), DeployStep::cancelled) << record.DebugString();
  EXPECT_NE(step(record, "api").error().find("cancelled while waiting for health: api/http"),
            std::string::npos)
      << step(record, "api").error();
}

TEST_F(DeployRunTest, AStepThatCannotRollBackSaysWhyInItsEvent) {
  script("api").can_roll_back = false;
  script("web").on_start = [](const DeployContext& c) -> Result<DeployProgress> {
    return DeployProgress{DeployStatus::failed, c.deploy_id, "boom"};
  };
  start(config(repo("api") + repo("web", "", "api")));
  v1::DeployRequest request;
  request.set_env("dev");
  request.add_repos("api");
  request.add_repos("web");
  request.set_on_failure("rollback");
  auto accepted = orchestrator_->deploy(request);
  ASSERT_TRUE(accepted);
  const auto record = wait_finished(accepted.value().deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(step(record, "api").state(), DeployStep::succeeded);
  const std::string why = "provider scripted cannot roll this target back";
  EXPECT_EQ(step(record, "api").rollback_error(), why);
  bool event_says_why = false;
  for (const auto& e : publisher_.events()) {
    event_says_why |= e.kind() == "rollback_failed" && e.step().repo() == "api" &&
                      e.step().rollback_error() == why;
  }
  EXPECT_TRUE(event_says_why) << ::testing::PrintToString(publisher_.kinds());
}

}  // namespace
}  // namespace orgd
