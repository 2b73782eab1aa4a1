// DeployRun in-process against a real nats-server, with scripted deploy targets standing in for
// providers: resume after a crash (interrupted and failed attempts), provider calls that hang,
// the bounded executor, and what a waiting health gate shows.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/deploy/deploy_store.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/plugin/registry.hpp"
#include "orgd/v1/deploy.pb.h"
#include "tests/support/deploy_rig.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/scripted_target.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using deploy::Orchestrator;
using testing::NatsServer;
using testing::Outcome;
using testing::ScriptedTarget;
using Call = ScriptedTarget::Call;
using testing::TempDir;
using testing::wait_until;
using v1::DeployRecord;
using v1::DeployStep;

class DeployRunTest : public ::testing::Test {
 protected:
  DeployRunTest() {
    EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK);
    registry_.add_factory("remote", testing::scripted_provider_factory(target_));
  }

  ~DeployRunTest() override {
    target_->release_all();
    if (orchestrator_) orchestrator_->stop(5s);
    orchestrator_.reset();
    jsCtx_Destroy(js_);
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
           "    deploy:\n      dev: {provider: scripted" + target_extra + "}\n";
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
    auto opened = deploy::DeployStore::open(
        [js = js_](const BucketSpec& spec) { return KvBucket::open(js, spec); },
        deploy::deploy_bucket_specs(Duration{0}, std::chrono::seconds{2}, 1), clock_);
    EXPECT_TRUE(opened) << opened.error().message;
    deploy::DeployStore& store = *opened.value();
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

  // The attempts of the calls `call` on `repo` made so far, in order.
  std::vector<int> attempts(const std::string& repo, Call call) const {
    std::vector<int> out;
    for (const auto& made : target_->calls(repo, call)) out.push_back(made.context.attempt);
    return out;
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
  std::shared_ptr<ScriptedTarget> target_ = std::make_shared<ScriptedTarget>();
  ProviderRegistry registry_;
  testing::RecordingPublisher publisher_;
  testing::FakeHealth health_;
  MetricsRegistry metrics_;
  SystemClock clock_;
  std::shared_ptr<const deploy::Inventory> inventory_;
  std::unique_ptr<Orchestrator> orchestrator_;
};

// ---- A step interrupted by orgd's crash --------------------------------------------------------

TEST_F(DeployRunTest, AStepInterruptedByACrashRunsAgainWithoutUsingARetry) {
  // retries: 0 — an attempt the crash ended must not be the step's only chance.
  target_->on_recover("api", {Outcome::interrupted("interrupted: orgd stopped")});
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2) << record.DebugString();
  EXPECT_EQ(step(record, "api").interrupted_attempts(), 1) << record.DebugString();
  EXPECT_EQ(attempts("api", Call::recover), std::vector<int>{1});
  EXPECT_EQ(attempts("api", Call::start), std::vector<int>{2});
  EXPECT_TRUE(publisher_.has("step_interrupted api"));
}

TEST_F(DeployRunTest, AStepWhoseProviderSaysItFailedStillFailsOnResume) {
  target_->on_recover("api", {Outcome::failed("the release was rejected")});
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 1);
  EXPECT_EQ(step(record, "api").interrupted_attempts(), 0);
  EXPECT_EQ(step(record, "api").error(), "the release was rejected");
  EXPECT_TRUE(attempts("api", Call::start).empty()) << "a failed deploy is not started again";
}

TEST_F(DeployRunTest, AProviderThatCannotAnswerYetIsAskedAgainOnResume) {
  // Right after a crash the provider's API may be unreachable for a moment: that says nothing
  // about the deploy, so it is no reason to fail the step.
  target_->on_recover("api", {Outcome::error(unavailable("provider API unreachable")).times(2),
                              Outcome::interrupted("interrupted: orgd stopped")});
  const std::string id = left_by_a_crash("api");
  start(config(repo("api")));
  const auto record = wait_finished(id);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(target_->count("api", Call::recover), 3);
  EXPECT_EQ(attempts("api", Call::start), std::vector<int>{2});
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
  std::atomic<bool> done{false};
  for (int i = 0; i < kDeploys; ++i) {
    const std::string name = "r" + std::to_string(i);
    repos += repo(name);
    target_->fallback(name, Call::start, Outcome::running());
    target_->fallback(
        name, Call::poll,
        Outcome::computed([&done](const DeployContext& c) -> Result<DeployProgress> {
          return DeployProgress{
              done ? DeployStatus::succeeded : DeployStatus::running, c.deploy_id, {}};
        }));
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
  target_->fallback("api", Call::start, Outcome::succeeded().hang());
  start(config(repo("api", ", step_timeout: 1s, retries: 1")));
  const std::string id = deploy({"api"});
  const auto record = wait_finished(id, 60s);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2) << record.DebugString();
  EXPECT_EQ(step(record, "api").error(), "start did not return within 1s");
  EXPECT_TRUE(publisher_.has("step_retrying api"));
  EXPECT_EQ(attempts("api", Call::start), (std::vector<int>{1, 2}));
  // Both calls still hang: their threads are counted, not forgotten.
  EXPECT_EQ(metrics_.gauge("orgd_provider_calls_hung", "").value(), 2);
}

TEST_F(DeployRunTest, StopWhileAProviderHangsIsBoundedAndHandsTheDeployOver) {
  target_->fallback("api", Call::start, Outcome::succeeded().hang());
  start(config(repo("api")));
  const std::string id = deploy({"api"});
  ASSERT_TRUE(wait_until([&] { return target_->hung("api") == 1; }, 20s));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    orchestrator_->stop(1s);
    stopped = true;
  });
  // Generous for a loaded machine; without a bound it would wait for the provider forever.
  const bool bounded = wait_until([&] { return stopped.load(); }, 15s);
  if (!bounded) target_->release_all();
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
  target_->on_start("api", {Outcome::running()});
  auto finished = std::make_shared<std::atomic<bool>>(false);
  target_->fallback(
      "api", Call::poll,
      Outcome::computed([finished](const DeployContext& c) -> Result<DeployProgress> {
        return DeployProgress{
            *finished ? DeployStatus::succeeded : DeployStatus::running, c.deploy_id, {}};
      }));
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
  return testing::FakeHealth::unhealthy(std::move(services), "http no report since deploy");
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
  // Only api's rollback is asked for (web failed before it deployed anything).
  target_->set_can_rollback(false);
  target_->on_start("web", {Outcome::failed("boom")});
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
