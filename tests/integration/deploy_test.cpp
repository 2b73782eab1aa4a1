// Deploy orchestration in-process against a real nats-server: plans, waves, the local and exec
// providers, failure policies, cancel, locks, idempotency, the command stream and health gates.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "daemon/app/daemon.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"
#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Collector;
using testing::connect_client;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;
using v1::DeployRecord;
using v1::DeployStep;

using Reply = testing::ApiReply;

std::optional<Reply> call(natsConnection* conn, const std::string& subject,
                          const std::string& data) {
  return testing::api_call(conn, subject, data);
}

// A repo block: `deploy: {dev: {...target}}` plus depends_on.
std::string repo(const std::string& name, const std::string& target,
                 const std::string& depends_on = "") {
  std::string out = "  " + name + ":\n";
  if (!depends_on.empty()) out += "    depends_on: [" + depends_on + "]\n";
  out += "    deploy:\n      dev: " + target + "\n";
  return out;
}

class DeployTest : public ::testing::Test {
 protected:
  std::string config(const std::string& repos, const std::string& deploy_settings = "") {
    return "org: acme\n"
           "nats:\n  urls: [" + server.url() + "]\n  connect_timeout: 2s\n"
           "  reconnect_wait: 100ms\n  data_dir: " + dir.path().string() + "\n"
           "http:\n  enabled: false\n"
           "log:\n  level: warn\n"
           "deploy:\n  lease_ttl: 2s\n  retry_backoff: 50ms\n" +
           (deploy_settings.empty() ? "  health_gate: false\n" : deploy_settings) +
           "providers:\n  local: {type: local}\n  shell: {type: exec}\n"
           "repos:\n" + repos;
  }

  // api <- web, api <- worker, all local.
  std::string three_local(const std::string& api = "{provider: local, duration: 100ms}",
                          const std::string& web = "{provider: local, duration: 100ms}",
                          const std::string& worker = "{provider: local, duration: 100ms}") {
    return repo("api", api) + repo("web", web, "api") + repo("worker", worker, "api");
  }

  void start(const std::string& yaml) {
    auto loaded = load_config_string(yaml, "test.yaml", Environment());
    DaemonOptions options;
    options.deploy_poll_interval = 20ms;
    options.command_backoff = {200ms};
    options.command_max_deliver = 4;
    daemon = std::make_unique<Daemon>(loaded, options, Environment());
    daemon->start();
    ASSERT_TRUE(wait_until([&] { return daemon->ready(); }, 15s)) << "orgd never became ready";
  }

  v1::DeployAccepted deploy(const std::string& body) {
    return testing::api_deploy(client.get(), "org.acme", body);
  }

  std::optional<DeployRecord> get(const std::string& id) {
    return testing::api_deploy_get(client.get(), "org.acme", id);
  }

  DeployRecord wait_finished(const std::string& id, std::chrono::milliseconds deadline = 20s) {
    return testing::wait_deploy_finished(client.get(), "org.acme", id, deadline, 10ms);
  }

  static const DeployStep& step(const DeployRecord& record, const std::string& repo) {
    for (const auto& s : record.steps()) {
      if (s.repo() == repo) return s;
    }
    static const DeployStep none;
    ADD_FAILURE() << "no step " << repo;
    return none;
  }

  // Events of a deploy as "kind repo", in arrival order (log lines left out).
  static std::vector<std::string> kinds(Collector& events) {
    std::vector<std::string> out;
    for (const auto& m : events.messages()) {
      v1::DeployEvent event;
      if (!decode(m.data, Encoding::json, event, 1 << 20)) continue;
      if (event.kind() == "log") continue;
      out.push_back(event.kind() + (event.step().repo().empty() ? "" : " " + event.step().repo()));
    }
    return out;
  }

  static std::ptrdiff_t index_of(const std::vector<std::string>& list, const std::string& item) {
    auto it = std::find(list.begin(), list.end(), item);
    return it == list.end() ? -1 : it - list.begin();
  }

  int executions(const std::string& repo_name) {
    std::ifstream in(fs::path(dir.path()) / "local" / repo_name / "dev" / "executions.log");
    int n = 0;
    std::string line;
    while (std::getline(in, line)) n += line.empty() ? 0 : 1;
    return n;
  }

  void TearDown() override {
    if (daemon) daemon->stop();
  }

  TempDir dir;
  NatsServer server;
  testing::NatsConnectionPtr client = connect_client(server.url());
  std::unique_ptr<Daemon> daemon;
};

TEST_F(DeployTest, DeploysThreeReposInDependencyOrder) {
  start(config(three_local()));
  Collector events(client.get(), "org.acme.events.deploy.>");
  auto accepted = deploy(R"({"repos":["worker","web","api"],"env":"dev","ref":"abc123"})");
  ASSERT_FALSE(accepted.deploy_id().empty());
  ASSERT_EQ(accepted.waves_size(), 2);
  EXPECT_EQ(accepted.waves(0).values(0).string_value(), "api");
  ASSERT_EQ(accepted.waves(1).values_size(), 2);
  EXPECT_EQ(accepted.waves(1).values(0).string_value(), "web");
  EXPECT_EQ(accepted.waves(1).values(1).string_value(), "worker");

  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(record.ref(), "abc123");
  for (const char* name : {"api", "web", "worker"}) {
    const auto& s = step(record, name);
    EXPECT_EQ(s.state(), DeployStep::succeeded) << name;
    EXPECT_EQ(s.attempts(), 1) << name;
    EXPECT_TRUE(s.has_started_at() && s.has_finished_at()) << name;
    EXPECT_EQ(executions(name), 1) << name;
  }
  // web and worker start only once api has succeeded.
  ASSERT_TRUE(wait_until([&] { return index_of(kinds(events), "finished") >= 0; }, 5s));
  const auto seen = kinds(events);
  EXPECT_EQ(seen.front(), "accepted");
  EXPECT_LT(index_of(seen, "step_succeeded api"), index_of(seen, "step_started web"));
  EXPECT_LT(index_of(seen, "step_succeeded api"), index_of(seen, "step_started worker"));
  EXPECT_EQ(seen.back(), "finished");
  // Events carry Nats-Msg-Id, so the stream drops a replayed one.
  for (const auto& m : events.messages()) EXPECT_TRUE(m.header("Nats-Msg-Id")) << m.subject;

  // Status shows the last deploy per repo and env.
  ASSERT_TRUE(wait_until(
      [&] {
        auto reply = call(client.get(), "org.acme.api.status.repo", R"({"repo":"web"})");
        v1::RepoStatus status;
        return reply && decode(reply->data, Encoding::json, status, 1 << 20) &&
               status.deploys().count("dev") == 1 &&
               status.deploys().at("dev").deploy_id() == accepted.deploy_id() &&
               status.deploys().at("dev").state() == DeployRecord::succeeded;
      },
      5s));
}

TEST_F(DeployTest, ExecTargetsRunTheirCommandsWithTheDeployInTheirEnvironment) {
  const fs::path out = fs::path(dir.path()) / "out";
  fs::create_directories(out);
  auto exec = [&](const std::string& name) {
    return "{provider: shell, workdir: " + out.string() +
           ", command: 'echo \"$ORGD_REPO $ORGD_ENV $ORGD_REF $ORGD_DEPLOY_ID\" > " + name +
           ".txt; echo deployed " + name + "'}";
  };
  start(config(repo("api", exec("api")) + repo("web", exec("web"), "api") +
               repo("worker", exec("worker"), "api")));
  Collector events(client.get(), "org.acme.events.deploy.>");
  auto accepted = deploy(R"({"all":true,"env":"dev","ref":"v2"})");
  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  for (const std::string name : {"api", "web", "worker"}) {
    EXPECT_EQ(testing::read_file(out / (name + ".txt")),
              name + " dev v2 " + accepted.deploy_id() + "\n");
    EXPECT_EQ(step(record, name).provider(), "shell");
  }
  ASSERT_TRUE(wait_until([&] { return index_of(kinds(events), "finished") >= 0; }, 5s));
  int lines = 0;
  for (const auto& m : events.messages()) {
    v1::DeployEvent event;
    if (decode(m.data, Encoding::json, event, 1 << 20) && event.kind() == "log" &&
        event.line() == "deployed " + event.step().repo()) {
      ++lines;
    }
  }
  EXPECT_EQ(lines, 3);
}

TEST_F(DeployTest, AllMeansEveryRepoWithATargetAndDryRunDoesNothing) {
  start(config(three_local() + "  docs: {}\n"));
  auto plan = deploy(R"({"all":true,"env":"dev","dryRun":true})");
  EXPECT_TRUE(plan.dry_run());
  EXPECT_TRUE(plan.deploy_id().empty());
  ASSERT_EQ(plan.waves_size(), 2);
  EXPECT_EQ(plan.waves(1).values_size(), 2);
  auto list = call(client.get(), "org.acme.api.deploy.list", "{}");
  ASSERT_TRUE(list);
  v1::DeployList deploys;
  ASSERT_TRUE(decode(list->data, Encoding::json, deploys, 1 << 20));
  EXPECT_EQ(deploys.deploys_size(), 0);
  EXPECT_EQ(executions("api"), 0);
}

TEST_F(DeployTest, RejectsBadRequestsWithClearErrors) {
  start(config(three_local() + "  docs: {}\n"));
  struct Case {
    const char* body;
    const char* code;
    const char* message_part;
  };
  for (const Case& c : {
           Case{R"({"repos":["nope"],"env":"dev"})", "404", "unknown repo 'nope'"},
           Case{R"({"repos":["docs"],"env":"dev"})", "400", "no deploy target"},
           Case{R"({"repos":["api"]})", "400", "env is required"},
           Case{R"({"env":"dev"})", "400", "name the repos"},
           Case{R"({"repos":["api"],"env":"dev","onFailure":"pray"})", "400", "onFailure"},
           Case{R"({"repos":["api"],"env":"prod"})", "400", "no deploy target"},
           Case{R"({"repos":["api"],"env":"d.v"})", "400", "invalid env"},
           Case{R"({"repos":["api"],"env":"dev","ref":"a\nb"})", "400", "invalid ref"},
           Case{R"({"repos":["api"],"env":"dev","reason":"two\nlines"})", "400", "invalid reason"},
           Case{R"({"repos":["api"],"env":"dev","bogus":1})", "400", ""},
       }) {
    auto reply = call(client.get(), "org.acme.api.deploy", c.body);
    ASSERT_TRUE(reply) << c.body;
    ASSERT_TRUE(reply->error_code) << c.body << " -> " << reply->data;
    EXPECT_EQ(*reply->error_code, c.code) << c.body;
    EXPECT_NE(reply->error.value_or("").find(c.message_part), std::string::npos)
        << c.body << " -> " << reply->error.value_or("");
  }
  auto missing = call(client.get(), "org.acme.api.deploy.get", R"({"deployId":"nope"})");
  ASSERT_TRUE(missing && missing->error_code);
  EXPECT_EQ(*missing->error_code, "404");
}

TEST_F(DeployTest, StopPolicyRunsNoDependentOfAFailedStep) {
  start(config(three_local("{provider: local, duration: 50ms, fail: true}")));
  auto accepted = deploy(R"({"repos":["api","web","worker"],"env":"dev"})");
  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::failed);
  EXPECT_EQ(step(record, "api").state(), DeployStep::failed);
  EXPECT_NE(step(record, "api").error().find("fail: true"), std::string::npos);
  EXPECT_EQ(step(record, "web").state(), DeployStep::skipped);
  EXPECT_EQ(step(record, "worker").state(), DeployStep::skipped);
  EXPECT_EQ(executions("web"), 0);
  EXPECT_EQ(executions("worker"), 0);
  EXPECT_NE(record.error().find("api"), std::string::npos);
}

TEST_F(DeployTest, RollbackPolicyRollsCompletedStepsBackInReverseOrder) {
  const std::string failing_worker =
      "{provider: shell, command: 'echo starting worker; exit 3'}";
  start(config(repo("api", "{provider: local, duration: 50ms}") +
               repo("web", "{provider: local, duration: 50ms}", "api") +
               repo("worker", failing_worker, "web")));
  Collector events(client.get(), "org.acme.events.deploy.>");
  auto accepted = deploy(R"({"repos":["api","web","worker"],"env":"dev","onFailure":"rollback"})");
  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::rolled_back) << record.DebugString();
  EXPECT_EQ(record.on_failure(), "rollback");
  EXPECT_EQ(step(record, "worker").state(), DeployStep::failed);
  EXPECT_NE(step(record, "worker").error().find("3"), std::string::npos);
  EXPECT_EQ(step(record, "api").state(), DeployStep::rolled_back);
  EXPECT_EQ(step(record, "web").state(), DeployStep::rolled_back);
  const fs::path local = fs::path(dir.path()) / "local";
  EXPECT_TRUE(fs::exists(local / "api" / "dev" / (accepted.deploy_id() + ".rolled_back")));
  EXPECT_TRUE(fs::exists(local / "web" / "dev" / (accepted.deploy_id() + ".rolled_back")));
  ASSERT_TRUE(wait_until([&] { return index_of(kinds(events), "finished") >= 0; }, 5s));
  const auto seen = kinds(events);
  // web was deployed after api, so it is rolled back first.
  EXPECT_LT(index_of(seen, "rolled_back web"), index_of(seen, "rolled_back api"));
  // The exec command's output is streamed as log events.
  bool saw_line = false;
  for (const auto& m : events.messages()) {
    v1::DeployEvent event;
    if (decode(m.data, Encoding::json, event, 1 << 20) && event.kind() == "log" &&
        event.line() == "starting worker") {
      saw_line = event.step().repo() == "worker";
    }
  }
  EXPECT_TRUE(saw_line);
}

TEST_F(DeployTest, RetriesAFailedAttempt) {
  const fs::path marker = fs::path(dir.path()) / "second-time";
  const std::string flaky = "{provider: shell, retries: 2, command: 'if [ -e " + marker.string() +
                            " ]; then exit 0; fi; touch " + marker.string() + "; exit 1'}";
  start(config(repo("api", flaky)));
  Collector events(client.get(), "org.acme.events.deploy.>");
  auto accepted = deploy(R"({"repos":["api"],"env":"dev"})");
  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_EQ(step(record, "api").attempts(), 2);
  ASSERT_TRUE(wait_until([&] { return index_of(kinds(events), "finished") >= 0; }, 5s));
  EXPECT_GE(index_of(kinds(events), "step_retrying api"), 0);
}

TEST_F(DeployTest, CancelStopsSchedulingAndLetsRunningStepsFinish) {
  start(config(three_local("{provider: local, duration: 1500ms}")));
  auto accepted = deploy(R"({"repos":["api","web","worker"],"env":"dev"})");
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get(accepted.deploy_id());
        return record && step(*record, "api").state() == DeployStep::running;
      },
      10s));
  auto reply = call(client.get(), "org.acme.api.deploy.cancel",
                    R"({"deployId":")" + accepted.deploy_id() + R"(","reason":"operator"})");
  ASSERT_TRUE(reply);
  ASSERT_FALSE(reply->error_code) << reply->data;
  const auto record = wait_finished(accepted.deploy_id());
  EXPECT_EQ(record.state(), DeployRecord::cancelled);
  EXPECT_EQ(step(record, "api").state(), DeployStep::succeeded);
  EXPECT_EQ(step(record, "web").state(), DeployStep::cancelled);
  EXPECT_EQ(step(record, "worker").state(), DeployStep::cancelled);
  EXPECT_EQ(record.cancel_reason(), "operator");
  EXPECT_EQ(executions("web"), 0);
  // A finished deploy cannot be cancelled.
  auto again = call(client.get(), "org.acme.api.deploy.cancel",
                    R"({"deployId":")" + accepted.deploy_id() + R"("})");
  ASSERT_TRUE(again && again->error_code);
  EXPECT_EQ(*again->error_code, "409");
}

TEST_F(DeployTest, ConflictingDeployGets409NamingTheHolder) {
  start(config(three_local("{provider: local, duration: 1500ms}")));
  auto first = deploy(R"({"repos":["api"],"env":"dev"})");
  auto reply = call(client.get(), "org.acme.api.deploy", R"({"repos":["api","web"],"env":"dev"})");
  ASSERT_TRUE(reply && reply->error_code);
  EXPECT_EQ(*reply->error_code, "409");
  EXPECT_NE(reply->error->find(first.deploy_id()), std::string::npos) << *reply->error;
  // web was not left locked by the refused request.
  auto web = deploy(R"({"repos":["web"],"env":"dev"})");
  EXPECT_FALSE(web.deploy_id().empty());
  EXPECT_EQ(wait_finished(first.deploy_id()).state(), DeployRecord::succeeded);
  EXPECT_EQ(wait_finished(web.deploy_id()).state(), DeployRecord::succeeded);
  // Once the holder finished, api can be deployed again.
  auto next = deploy(R"({"repos":["api"],"env":"dev"})");
  EXPECT_FALSE(next.deploy_id().empty());
  EXPECT_EQ(wait_finished(next.deploy_id()).state(), DeployRecord::succeeded);
}

TEST_F(DeployTest, SameRequestIdGivesTheSameDeploy) {
  start(config(three_local()));
  const std::string body = R"({"repos":["api"],"env":"dev","requestId":"ci-run-42"})";
  auto first = deploy(body);
  auto second = deploy(body);
  EXPECT_EQ(first.deploy_id(), second.deploy_id());
  EXPECT_FALSE(first.duplicate());
  EXPECT_TRUE(second.duplicate());
  wait_finished(first.deploy_id());
  auto third = deploy(body);
  EXPECT_EQ(third.deploy_id(), first.deploy_id());
  EXPECT_EQ(executions("api"), 1);
}

TEST_F(DeployTest, CommandStreamDeploysOnceAndDeadLettersBadCommands) {
  start(config(three_local()));
  Collector dlq(client.get(), "org.acme.dlq.>");
  Collector events(client.get(), "org.acme.events.deploy.*.finished");
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  auto publish = [&](const std::string& body, const std::string& msg_id) {
    natsMsg* msg = nullptr;
    natsMsg_Create(&msg, "org.acme.cmd.deploy", nullptr, body.data(),
                   static_cast<int>(body.size()));
    if (!msg_id.empty()) natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id.c_str());
    jsPubAck* ack = nullptr;
    EXPECT_EQ(js_PublishMsg(&ack, js, msg, nullptr, nullptr), NATS_OK);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(msg);
  };
  // The same command twice under one message id: the stream keeps one.
  publish(R"({"repos":["api","web"],"env":"dev"})", "cmd-1");
  publish(R"({"repos":["api","web"],"env":"dev"})", "cmd-1");
  // A command the stream keeps twice but with the same request id: one deploy.
  publish(R"({"repos":["worker"],"env":"dev","requestId":"r-7"})", "cmd-2");
  publish(R"({"repos":["worker"],"env":"dev","requestId":"r-7"})", "cmd-3");
  publish(R"({"repos":[42],"env":"dev"})", "cmd-4");
  ASSERT_TRUE(wait_until([&] { return events.size() >= 2; }, 15s));
  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 1; }, 10s));
  const auto dead = dlq.messages().front();
  EXPECT_EQ(dead.subject, "org.acme.dlq.cmd.deploy");
  EXPECT_TRUE(dead.header("Orgd-Dlq-Reason"));
  EXPECT_EQ(dead.data, R"({"repos":[42],"env":"dev"})");
  auto list = call(client.get(), "org.acme.api.deploy.list", R"({"env":"dev"})");
  ASSERT_TRUE(list);
  v1::DeployList deploys;
  ASSERT_TRUE(decode(list->data, Encoding::json, deploys, 1 << 20));
  EXPECT_EQ(deploys.deploys_size(), 2);
  EXPECT_EQ(executions("api"), 1);
  EXPECT_EQ(executions("worker"), 1);
  jsCtx_Destroy(js);
}

// A command for a locked repo is queued, not retried until it is dead-lettered: see
// DeployApiTest.CommandsForALockedRepoQueueInOrderAndOthersFlow (deploy_api_test.cpp).

// Max-deliveries advisories (real, made-up and malformed) are tested in command_intake_test.cpp
// and hostile_bus_test.cpp: a made-up one for an accepted command, as this file once tested,
// must not copy it to the DLQ.

TEST_F(DeployTest, HealthGateWaitsForFreshOkReportsAndFailsWithoutThem) {
  const std::string gate = "  health_gate: {timeout: 3s, soak: 300ms}\n";
  start(config(repo("api", "{provider: local, duration: 50ms}") +
                   "    health: {services: [http]}\n" +
                   repo("web", "{provider: local, duration: 50ms}", "api") +
                   "    health: {services: [http]}\n",
               gate));
  // api reports ok throughout; web never reports.
  std::atomic<bool> reporting{true};
  std::thread reporter([&] {
    while (reporting) {
      const std::string body = R"({"status":"ok","ttlSeconds":30})";
      natsConnection_Publish(client.get(), "org.acme.health.api.http", body.data(),
                             static_cast<int>(body.size()));
      std::this_thread::sleep_for(50ms);
    }
  });
  auto accepted = deploy(R"({"repos":["api","web"],"env":"dev"})");
  const auto record = wait_finished(accepted.deploy_id());
  reporting = false;
  reporter.join();
  EXPECT_EQ(step(record, "api").state(), DeployStep::succeeded);
  EXPECT_TRUE(step(record, "api").has_healthy_at());
  EXPECT_EQ(step(record, "web").state(), DeployStep::failed);
  EXPECT_NE(step(record, "web").error().find("health gate"), std::string::npos)
      << step(record, "web").error();
  EXPECT_EQ(record.state(), DeployRecord::failed);
}

// Every replica ingests every report; the scheduler lease holder alone publishes what changed.
// The test waits until the follower has really taken in both reports (its own health view shows
// them, and its handlers have returned, so anything it published is on its connection), then
// sends each replica a $SRV.PING whose reply goes to a subject the collector watches: that reply
// travels behind everything the replica published before it, so once both replies are in, a
// second copy of a state or change would have been seen.
TEST_F(DeployTest, OnlyTheSchedulerPublishesHealthChangesAmongReplicas) {
  const std::string yaml = config(three_local() + "    health: {services: [http]}\n");
  start(yaml);
  ASSERT_TRUE(wait_until([&] { return daemon->orchestrator()->is_scheduler(); }, 20s));
  auto loaded = load_config_string(yaml, "test.yaml", Environment());
  Daemon second(loaded, DaemonOptions{}, Environment());
  second.start();
  ASSERT_TRUE(wait_until([&] { return second.ready(); }, 30s));
  ASSERT_TRUE(wait_until([&] { return second.orchestrator()->is_follower(); }, 20s));
  EXPECT_FALSE(second.orchestrator()->is_scheduler());

  Collector bus(client.get(), "org.acme.>");
  const std::uint64_t leader_before = daemon->health_reports_processed();
  const std::uint64_t follower_before = second.health_reports_processed();
  auto report = [&](const char* repo_name, const char* status) {
    const std::string body = std::string(R"({"status":")") + status + R"("})";
    const std::string subject = std::string("org.acme.health.") + repo_name + ".http";
    ASSERT_EQ(natsConnection_Publish(client.get(), subject.c_str(), body.data(),
                                     static_cast<int>(body.size())),
              NATS_OK);
    ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  };
  report("api", "ok");
  report("worker", "down");

  auto health_of = [](Daemon& replica, const char* repo_name) {
    auto status = replica.health().repo_status(repo_name);
    return status.ok() ? status.value().health() : v1::Health::unknown;
  };
  for (Daemon* replica : {daemon.get(), &second}) {
    const char* name = replica == &second ? "follower" : "scheduler";
    const std::uint64_t before = replica == &second ? follower_before : leader_before;
    EXPECT_TRUE(wait_until(
        [&] {
          return health_of(*replica, "api") == v1::Health::ok &&
                 health_of(*replica, "worker") == v1::Health::down &&
                 replica->health_reports_processed() >= before + 2;
        },
        20s))
        << "the " << name << " did not take in both reports: api "
        << v1::Health::Status_Name(health_of(*replica, "api")) << ", worker "
        << v1::Health::Status_Name(health_of(*replica, "worker")) << ", "
        << replica->health_reports_processed() - before << " reports processed";
  }

  auto count = [&](const std::string& subject) {
    int n = 0;
    for (const auto& m : bus.messages()) n += m.subject == subject ? 1 : 0;
    return n;
  };
  for (Daemon* replica : {daemon.get(), &second}) {
    const std::string barrier = "org.acme.test.barrier." + replica->discovery().identity().id;
    const std::string ping = "$SRV.PING.orgd." + replica->discovery().identity().id;
    ASSERT_EQ(natsConnection_PublishRequestString(client.get(), ping.c_str(), barrier.c_str(), ""),
              NATS_OK);
    ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
    ASSERT_TRUE(wait_until([&] { return count(barrier) == 1; }, 20s))
        << "no $SRV.PING reply from " << replica->discovery().identity().id;
  }

  for (const char* subject :
       {"org.acme.state.health.api.http", "org.acme.state.health.worker.http",
        "org.acme.events.health.api.changed", "org.acme.events.health.worker.changed"}) {
    EXPECT_EQ(count(subject), 1) << subject << ": the scheduler alone publishes it, once";
  }
  // A deploy accepted by one replica is visible through either (the API is a queue group).
  auto accepted = deploy(R"({"repos":["api"],"env":"dev"})");
  EXPECT_EQ(wait_finished(accepted.deploy_id()).state(), DeployRecord::succeeded);
  second.stop();
}

}  // namespace
}  // namespace orgd
