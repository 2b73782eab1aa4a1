// The deploy API against a real nats-server: what a caller's mistakes get back (404s and plain
// sentences, dead letters only for malformed input), status built from orgd's own records
// whatever is published on the bus, commands queued behind a busy lock, and the API's KV work
// kept off the threads that answer probes and status.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "daemon/app/daemon.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"
#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/http_client.hpp"
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

using Reply = testing::ApiReply;

std::optional<Reply> call(natsConnection* conn, const std::string& subject,
                          const std::string& data) {
  return testing::api_call(conn, subject, data);
}

std::string local_repo(const std::string& name, const std::string& duration) {
  return "  " + name + ":\n    deploy:\n      dev: {provider: local, duration: " + duration + "}\n";
}

class DeployApiTest : public ::testing::Test {
 protected:
  std::string config(const std::string& repos, bool http = false,
                     const std::string& deploy_settings = "") {
    return "org: acme\n"
           "nats:\n  urls: [" +
           server.url() +
           "]\n  connect_timeout: 2s\n"
           "  reconnect_wait: 100ms\n  data_dir: " +
           dir.path().string() + "\n" +
           (http ? "http:\n  listen: 127.0.0.1:0\n" : "http:\n  enabled: false\n") +
           "log:\n  level: warn\n"
           "deploy:\n  lease_ttl: 2s\n  retry_backoff: 50ms\n  health_gate: false\n" +
           deploy_settings +
           "providers:\n  local: {type: local}\n"
           "repos:\n" +
           repos;
  }

  // `command_backoff`: also the ack wait of a delivered command (JetStream takes the first
  // delay), so a burst of commands longer than it to handle is redelivered.
  void start(const std::string& yaml, std::chrono::milliseconds command_backoff = 200ms) {
    auto loaded = load_config_string(yaml, "test.yaml", Environment());
    DaemonOptions options;
    options.deploy_poll_interval = 20ms;
    options.command_backoff = {command_backoff};
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

  DeployRecord wait_finished(const std::string& id, std::chrono::milliseconds deadline = 30s) {
    return testing::wait_deploy_finished(client.get(), "org.acme", id, deadline, 50ms);
  }

  std::optional<v1::RepoStatus> repo_status(const std::string& name) {
    auto reply = call(client.get(), "org.acme.api.status.repo", R"({"repo":")" + name + R"("})");
    v1::RepoStatus status;
    if (!reply || reply->error_code || !decode(reply->data, Encoding::json, status, 1 << 22)) {
      return std::nullopt;
    }
    return status;
  }

  void publish_command(jsCtx* js, const std::string& body) {
    jsPubAck* ack = nullptr;
    ASSERT_EQ(js_Publish(&ack, js, "org.acme.cmd.deploy", body.data(),
                         static_cast<int>(body.size()), nullptr, nullptr),
              NATS_OK);
    jsPubAck_Destroy(ack);
  }

  void TearDown() override {
    if (daemon) daemon->stop();
  }

  TempDir dir;
  NatsServer server;
  testing::NatsConnectionPtr client = connect_client(server.url());
  std::unique_ptr<Daemon> daemon;
};

// ---- A10: lookups of what does not exist are answers, not dead letters ---------------------

TEST_F(DeployApiTest, UnknownDeployIdsAndReposAre404RepliesNotDeadLetters) {
  start(config(local_repo("api", "50ms")));
  Collector dlq(client.get(), "org.acme.dlq.>");
  struct Case {
    const char* subject;
    const char* body;
    const char* code;
  };
  for (const Case& c : {
           Case{"org.acme.api.deploy.get", R"({"deployId":"20260101-000000-00000000"})", "404"},
           Case{"org.acme.api.deploy.cancel", R"({"deployId":"20260101-000000-00000000"})", "404"},
           Case{"org.acme.api.deploy", R"({"repos":["nope"],"env":"dev"})", "404"},
           Case{"org.acme.api.status.repo", R"({"repo":"nope"})", "404"},
       }) {
    auto reply = call(client.get(), c.subject, c.body);
    ASSERT_TRUE(reply) << c.subject;
    ASSERT_TRUE(reply->error_code) << c.subject << " -> " << reply->data;
    EXPECT_EQ(*reply->error_code, c.code) << c.subject << " " << c.body;
    EXPECT_NE(reply->data.find(R"("code":"not_found")"), std::string::npos) << reply->data;
  }
  // Malformed input still is: the dead letter below arrives after the lookups above, so had any
  // of them been dead-lettered it would be here first.
  auto bad = call(client.get(), "org.acme.api.deploy.get", R"({"deployId":"a.b"})");
  ASSERT_TRUE(bad && bad->error_code);
  EXPECT_EQ(*bad->error_code, "400");
  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 1; }, 10s));
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq.messages().front().subject, "org.acme.dlq.api.deploy.get");
}

// ---- A12: error replies are plain sentences ------------------------------------------------

TEST_F(DeployApiTest, BadBodiesGetPlainSentencesNeverProtobufInternals) {
  start(config(local_repo("api", "50ms")));
  struct Case {
    const char* subject;
    const char* body;
    const char* says;
  };
  for (const Case& c : {
           Case{"org.acme.api.deploy", R"({"repos":["api"],"env":"dev","foo":1})",
                R"(unknown field "foo")"},
           Case{"org.acme.api.deploy", R"({"repos":"api","env":"dev"})",
                R"(field "repos": expected a list of strings)"},
           Case{"org.acme.api.deploy", R"({"repos":[1,2],"env":"dev"})",
                R"(field "repos": expected a list of strings)"},
           Case{"org.acme.api.deploy", R"({"repos":["api"],"env":"dev","dryRun":"yes"})",
                R"(field "dryRun": expected true or false)"},
           Case{"org.acme.api.deploy", R"({"repos":["api"],"env":)", "malformed JSON"},
           Case{"org.acme.api.deploy.list", R"({"limit":"ten"})",
                R"(field "limit": expected a whole number)"},
           Case{"org.acme.api.deploy.get", R"({"deployId":{"@type":"x"}})",
                R"(field "deployId": expected a string)"},
           Case{"org.acme.api.status", R"({"@type":"type.googleapis.com/orgd.v1.X"})",
                R"(unknown field "@type")"},
       }) {
    auto reply = call(client.get(), c.subject, c.body);
    ASSERT_TRUE(reply) << c.body;
    ASSERT_TRUE(reply->error_code) << c.body << " -> " << reply->data;
    EXPECT_EQ(*reply->error_code, "400") << c.body;
    const std::string said = reply->error.value_or("");
    EXPECT_NE(said.find(c.says), std::string::npos) << c.body << " -> " << said;
    for (const std::string& text : {said, reply->data}) {
      for (const char* internal : {"type.googleapis.com", "Cannot find field", "TYPE_STRING",
                                   "INVALID_ARGUMENT", "google.protobuf", "Root element"}) {
        EXPECT_EQ(text.find(internal), std::string::npos) << c.body << " -> " << text;
      }
    }
  }
}

// ---- A3: status comes from orgd's own records ----------------------------------------------

// A made-up deploy event as anyone on the bus could publish it.
void forge_event(natsConnection* conn, const std::string& id, const std::string& repo,
                 const std::string& env, const std::string& ref = "forged") {
  v1::DeployEvent event;
  event.set_deploy_id(id);
  event.set_kind("finished");
  event.set_env(env);
  event.set_ref(ref);
  event.set_state(DeployRecord::succeeded);
  event.mutable_step()->set_repo(repo);
  event.mutable_step()->set_state(v1::DeployStep::succeeded);
  const std::string subject = "org.acme.events.deploy." + id + ".finished";
  const std::string body = encode(event, Encoding::json);
  ASSERT_EQ(
      natsConnection_Publish(conn, subject.c_str(), body.data(), static_cast<int>(body.size())),
      NATS_OK);
}

TEST_F(DeployApiTest, ForgedDeployEventsDoNotChangeStatus) {
  start(config(local_repo("api", "50ms")));
  auto first = deploy(R"({"repos":["api"],"env":"dev","ref":"v1"})");
  ASSERT_EQ(wait_finished(first.deploy_id()).state(), DeployRecord::succeeded);
  // An id sorting after every real one, for a real target and for ones that do not exist.
  forge_event(client.get(), "99991231-235959-ffffffff", "api", "dev");
  forge_event(client.get(), "99991231-235959-fffffffe", "ghost", "dev");
  forge_event(client.get(), "99991231-235959-fffffffd", "api", "prod");
  natsConnection_Flush(client.get());
  // A real deploy after the forged events: once status shows it, orgd has seen them all.
  auto second = deploy(R"({"repos":["api"],"env":"dev","ref":"v2"})");
  ASSERT_EQ(wait_finished(second.deploy_id()).state(), DeployRecord::succeeded);
  v1::DeploySummary shown;
  ASSERT_TRUE(wait_until(
      [&] {
        auto status = repo_status("api");
        if (!status || status->deploys().count("dev") == 0) return false;
        shown = status->deploys().at("dev");
        return shown.deploy_id() == second.deploy_id() && shown.state() == DeployRecord::succeeded;
      },
      10s))
      << shown.DebugString();
  EXPECT_EQ(shown.ref(), "v2");
  auto status = repo_status("api");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->deploys().count("prod"), 0u);
  EXPECT_EQ(daemon->orchestrator()->summary_count(), 1u);
}

TEST_F(DeployApiTest, DeployEventsWithMadeUpNamesOrHugeRefsAddNothing) {
  start(config(local_repo("api", "50ms")));
  // Random repo and env names: none is configured, so none may take memory.
  for (int i = 0; i < 3000; ++i) {
    forge_event(client.get(), "20260101-000000-" + std::to_string(10000000 + i),
                "repo" + std::to_string(i), "env" + std::to_string(i % 7));
  }
  // Near-1 MB refs for the one real target, under ids that have no record.
  const std::string huge(900 * 1024, 'r');
  for (int i = 0; i < 20; ++i) {
    forge_event(client.get(), "99991231-235959-" + std::to_string(10000000 + i), "api", "dev",
                huge);
  }
  natsConnection_Flush(client.get());
  auto real = deploy(R"({"repos":["api"],"env":"dev","ref":"v1"})");
  ASSERT_EQ(wait_finished(real.deploy_id()).state(), DeployRecord::succeeded);
  ASSERT_TRUE(wait_until(
      [&] {
        auto status = repo_status("api");
        return status && status->deploys().count("dev") == 1 &&
               status->deploys().at("dev").deploy_id() == real.deploy_id();
      },
      10s));
  // One summary (the one configured target), holding a few hundred bytes at most.
  EXPECT_EQ(daemon->orchestrator()->summary_count(), 1u);
  EXPECT_LT(daemon->orchestrator()->summary_bytes(), 1024u);
  EXPECT_EQ(repo_status("api")->deploys().at("dev").ref(), "v1");
}

// Events naming a real deploy and a configured target are prompts to re-read that record; a
// flood of them (a deploy's own events, one per step change, or anyone's) costs at most one
// pass of re-reads per 250 ms, not a record read per event.
TEST_F(DeployApiTest, AFloodOfDeployEventsNamingARealDeployCostsPacedReads) {
  start(config(local_repo("api", "50ms")));
  auto real = deploy(R"({"repos":["api"],"env":"dev","ref":"v1"})");
  ASSERT_EQ(wait_finished(real.deploy_id()).state(), DeployRecord::succeeded);
  auto counter = [&](const char* name) { return daemon->metrics().counter(name, "").value(); };
  // The deploy's own events prompted reads; let them be seen before counting.
  ASSERT_TRUE(wait_until([&] { return counter("orgd_deploy_summary_prompts_total") >= 2; }, 10s));
  std::this_thread::sleep_for(300ms);
  const double prompts_before = counter("orgd_deploy_summary_prompts_total");
  const double reads_before = counter("orgd_deploy_summary_reads_total");
  const auto began = std::chrono::steady_clock::now();
  constexpr int kEvents = 2000;
  for (int i = 0; i < kEvents; ++i) {
    forge_event(client.get(), real.deploy_id(), "api", "dev");
    // Spread over about a second, so that without pacing each would find the last read done.
    if (i % 200 == 199) std::this_thread::sleep_for(100ms);
  }
  natsConnection_Flush(client.get());
  ASSERT_TRUE(wait_until(
      [&] { return counter("orgd_deploy_summary_prompts_total") >= prompts_before + kEvents; },
      30s));
  // The last prompt's pass runs at most 250 ms after it.
  std::this_thread::sleep_for(300ms);
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
  const double reads = counter("orgd_deploy_summary_reads_total") - reads_before;
  // One pass per 250 ms, plus the scheduler ticks' catch-up (every lease_ttl/3 = 666 ms).
  const double bound = static_cast<double>(elapsed.count()) / 250.0 +
                       static_cast<double>(elapsed.count()) / 666.0 + 2;
  EXPECT_GE(reads, 1) << "the prompts re-read nothing";
  EXPECT_LE(reads, bound) << kEvents << " events in " << elapsed.count() << " ms";
  // And the record read says what the record says, not what the events said.
  auto status = repo_status("api");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->deploys().at("dev").ref(), "v1");
}

// ---- A4: commands that find their repo locked wait in the queue, not in the intake --------

TEST_F(DeployApiTest, CommandsForALockedRepoQueueInOrderAndOthersFlow) {
  start(config(local_repo("api", "50ms") +
               "  slow:\n    deploy:\n"
               "      dev: {provider: local, duration: 4s}\n" +
               local_repo("web", "50ms")));
  Collector dlq(client.get(), "org.acme.dlq.>");
  // The holder: api and slow together, so api stays locked while slow takes its time.
  auto holder = deploy(R"({"repos":["api","slow"],"env":"dev"})");
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get(holder.deploy_id());
        return record && record->state() == DeployRecord::running;
      },
      10s));
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  constexpr int kQueued = 8;
  for (int i = 0; i < kQueued; ++i) {
    publish_command(
        js, R"({"repos":["api"],"env":"dev","requestId":"q-)" + std::to_string(i) + R"("})");
  }
  publish_command(js, R"({"repos":["web"],"env":"dev","requestId":"other"})");

  auto by_request = [&]() {
    std::map<std::string, DeployRecord> found;
    auto reply = call(client.get(), "org.acme.api.deploy.list", R"({"limit":100})");
    v1::DeployList list;
    if (reply && !reply->error_code && decode(reply->data, Encoding::json, list, 1 << 22)) {
      for (const auto& record : list.deploys()) found[record.request_id()] = record;
    }
    return found;
  };
  // Every command is taken and acked at once: none holds an intake slot while it waits.
  ASSERT_TRUE(wait_until(
      [&] {
        jsConsumerInfo* info = nullptr;
        if (js_GetConsumerInfo(&info, js, "ORGD_CMD", "orgd_cmd_deploy", nullptr, nullptr) !=
            NATS_OK) {
          return false;
        }
        const bool all_acked = info->NumAckPending == 0 && info->NumPending == 0 &&
                               info->AckFloor.Stream == kQueued + 1;
        jsConsumerInfo_Destroy(info);
        return all_acked && by_request().size() == kQueued + 2;
      },
      15s));
  auto seen = by_request();
  // The holder still runs: the queued deploys wait, saying for what; the other repo's flows.
  ASSERT_EQ(get(holder.deploy_id())->state(), DeployRecord::running);
  EXPECT_EQ(seen["q-0"].state(), DeployRecord::pending);
  EXPECT_NE(seen["q-0"].queued_behind().find("locked by deploy " + holder.deploy_id()),
            std::string::npos)
      << seen["q-0"].queued_behind();
  EXPECT_NE(seen["q-5"].queued_behind().find("queued"), std::string::npos)
      << seen["q-5"].queued_behind();
  EXPECT_TRUE(seen["other"].queued_behind().empty());
  EXPECT_EQ(wait_finished(seen["other"].deploy_id()).state(), DeployRecord::succeeded);

  // A queued deploy can be cancelled while it waits; it never runs.
  auto cancelled = call(client.get(), "org.acme.api.deploy.cancel",
                        R"({"deployId":")" + seen["q-3"].deploy_id() + R"(","reason":"no"})");
  ASSERT_TRUE(cancelled && !cancelled->error_code) << (cancelled ? cancelled->data : "");
  EXPECT_EQ(get(seen["q-3"].deploy_id())->state(), DeployRecord::cancelled);
  // The API keeps its 409 while the queue holds deploys for the repo.
  auto refused = call(client.get(), "org.acme.api.deploy", R"({"repos":["api"],"env":"dev"})");
  ASSERT_TRUE(refused && refused->error_code);
  EXPECT_EQ(*refused->error_code, "409");

  // Once the holder frees the lock, the queued deploys run one after another, in order.
  EXPECT_EQ(wait_finished(holder.deploy_id()).state(), DeployRecord::succeeded);
  std::vector<DeployRecord> ran;
  for (int i = 0; i < kQueued; ++i) {
    if (i == 3) continue;
    auto record = wait_finished(seen["q-" + std::to_string(i)].deploy_id());
    EXPECT_EQ(record.state(), DeployRecord::succeeded) << i;
    EXPECT_TRUE(record.queued_behind().empty());
    ran.push_back(record);
  }
  for (std::size_t i = 1; i < ran.size(); ++i) {
    EXPECT_GE(from_timestamp(ran[i].started_at()), from_timestamp(ran[i - 1].finished_at()))
        << ran[i].request_id() << " started before " << ran[i - 1].request_id() << " finished";
  }
  EXPECT_EQ(get(seen["q-3"].deploy_id())->state(), DeployRecord::cancelled);
  EXPECT_EQ(dlq.size(), 0u) << dlq.messages().front().data;
  jsCtx_Destroy(js);
}

// A burst of commands is delivered at once and handled one after another: the later ones wait
// in the client for longer than the first retry delay. They must not be redelivered meanwhile
// (each redelivery is handled again and burns one of the command's deliveries).
TEST_F(DeployApiTest, ABurstLongerToHandleThanTheFirstRetryDelayIsNotRedelivered) {
  // Retry delays of 200 ms, far shorter than handling 300 commands takes.
  start(config(local_repo("api", "60s")), 200ms);
  auto holder = deploy(R"({"repos":["api"],"env":"dev"})");
  ASSERT_FALSE(holder.deploy_id().empty());
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  constexpr int kCommands = 300;
  const auto began = std::chrono::steady_clock::now();
  for (int i = 0; i < kCommands; ++i) {
    publish_command(
        js, R"({"repos":["api"],"env":"dev","requestId":"b-)" + std::to_string(i) + R"("})");
  }
  auto queued = [&] {
    return daemon->metrics().counter("orgd_deploys_queued_total", "").value();
  };
  ASSERT_TRUE(wait_until([&] { return queued() >= kCommands; }, 60s, 20ms)) << queued();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
  // A redelivered command is handled again and answered as the deploy its request id made.
  // Redeliveries due are sent within their delay: wait that long for any to show.
  std::this_thread::sleep_for(500ms);
  const double handled_again =
      daemon->metrics().counter("orgd_deploys_duplicate_total", "").value();
  EXPECT_EQ(handled_again, 0) << kCommands << " commands handled in " << took.count() << " ms";
  EXPECT_EQ(queued(), kCommands);
  jsCtx_Destroy(js);
}

TEST_F(DeployApiTest, PastTheQueueBoundACommandIsDeadLetteredAtOnce) {
  // 501 commands take longer to queue than the tests' usual 200 ms ack wait.
  start(config(local_repo("api", "60s")), 60s);
  Collector dlq(client.get(), "org.acme.dlq.>");
  auto holder = deploy(R"({"repos":["api"],"env":"dev"})");
  ASSERT_FALSE(holder.deploy_id().empty());
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  // 500 deploys fit in the queue (README: Deploys); the 501st does not.
  constexpr int kBound = 500;
  for (int i = 0; i <= kBound; ++i) {
    publish_command(
        js, R"({"repos":["api"],"env":"dev","requestId":"q-)" + std::to_string(i) + R"("})");
  }
  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 1; }, 60s, 50ms));
  const auto dead = dlq.messages().front();
  EXPECT_EQ(dead.subject, "org.acme.dlq.cmd.deploy");
  EXPECT_NE(dead.data.find("q-" + std::to_string(kBound)), std::string::npos) << dead.data;
  const std::string reason = dead.header("Orgd-Dlq-Reason").value_or("");
  EXPECT_NE(reason.find("the deploy queue is full (500 deploys wait"), std::string::npos) << reason;
  EXPECT_EQ(dead.header("Orgd-Dlq-Code").value_or(""), "409");
  // Taken at once, not redelivered: nothing is left waiting for an ack.
  ASSERT_TRUE(wait_until(
      [&] {
        jsConsumerInfo* info = nullptr;
        if (js_GetConsumerInfo(&info, js, "ORGD_CMD", "orgd_cmd_deploy", nullptr, nullptr) !=
            NATS_OK) {
          return false;
        }
        const bool done =
            info->NumAckPending == 0 && info->NumPending == 0 && info->NumRedelivered == 0;
        jsConsumerInfo_Destroy(info);
        return done;
      },
      10s));
  EXPECT_EQ(dlq.size(), 1u);
  jsCtx_Destroy(js);
}

TEST_F(DeployApiTest, ListFiltersByEnvAndRepoFromTheRecentIndex) {
  std::string many;  // a deploy of more repos than an index entry names
  for (int i = 0; i < 20; ++i) many += local_repo("m" + std::to_string(i), "0s");
  start(config(local_repo("api", "0s") + local_repo("web", "0s") + many));
  auto api = deploy(R"({"repos":["api"],"env":"dev"})");
  auto web = deploy(R"({"repos":["web"],"env":"dev"})");
  wait_finished(web.deploy_id());  // the wide deploy below needs web's lock
  std::string body = R"({"env":"dev","repos":["web")";
  for (int i = 0; i < 20; ++i) body += ",\"m" + std::to_string(i) + "\"";
  auto wide = deploy(body + "]}");
  for (const auto& id : {api.deploy_id(), web.deploy_id(), wide.deploy_id()}) wait_finished(id);
  auto ids = [&](const std::string& request) {
    std::vector<std::string> out;
    auto reply = call(client.get(), "org.acme.api.deploy.list", request);
    v1::DeployList list;
    if (reply && !reply->error_code && decode(reply->data, Encoding::json, list, 1 << 22)) {
      for (const auto& record : list.deploys()) out.push_back(record.deploy_id());
    }
    return out;
  };
  using Ids = std::vector<std::string>;
  EXPECT_EQ(ids("{}"), (Ids{wide.deploy_id(), web.deploy_id(), api.deploy_id()}));
  EXPECT_EQ(ids(R"({"repo":"web"})"), (Ids{wide.deploy_id(), web.deploy_id()}));
  EXPECT_EQ(ids(R"({"repo":"m7"})"), (Ids{wide.deploy_id()}));
  EXPECT_EQ(ids(R"({"repo":"api","env":"dev"})"), (Ids{api.deploy_id()}));
  EXPECT_EQ(ids(R"({"env":"prod"})"), Ids{});
  EXPECT_EQ(ids(R"({"limit":1})"), (Ids{wide.deploy_id()}));
}

// ---- A9: the API's KV work does not hold up probes and status ------------------------------

void count_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* counter) {
  natsMsg_Destroy(msg);
  static_cast<std::atomic<int>*>(counter)->fetch_add(1);
}

TEST_F(DeployApiTest, ProbesAndStatusAnswerWhileDeployRequestsAreAccepted) {
  constexpr int kRepos = 1000;
  constexpr int kRequests = 50;
  std::string repos;
  for (int i = 0; i < kRepos; ++i) repos += local_repo("r" + std::to_string(i), "5s");
  start(config(repos, /*http=*/true, "  max_active: 1\n  parallel: 1\n"));
  // 50 deploy requests, 20 repos each (every one of the 1,000 repos), sent at once: each takes
  // its locks, claims and writes in KV before its reply.
  std::atomic<int> deploy_replies{0};
  natsSubscription* replies = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(&replies, client.get(), "_INBOX.deploys.*", &count_reply,
                                     &deploy_replies),
            NATS_OK);
  const int per_request = kRepos / kRequests;
  for (int r = 0; r < kRequests; ++r) {
    std::string body = R"({"env":"dev","repos":[)";
    for (int i = 0; i < per_request; ++i) {
      body += (i == 0 ? "\"r" : ",\"r") + std::to_string(r * per_request + i) + "\"";
    }
    body += "]}";
    const std::string reply_to = "_INBOX.deploys." + std::to_string(r);
    ASSERT_EQ(natsConnection_PublishRequest(client.get(), "org.acme.api.deploy", reply_to.c_str(),
                                            body.data(), static_cast<int>(body.size())),
              NATS_OK);
  }
  natsConnection_Flush(client.get());
  // Meanwhile probes and status answer, each while deploy requests still wait for their
  // replies (before the last of them).
  std::mutex seen_mutex;
  std::vector<std::pair<std::string, int>> seen_at;  // what answered, deploy replies by then
  std::vector<std::thread> askers;
  for (int i = 0; i < 3; ++i) {
    askers.emplace_back([&] {
      auto conn = connect_client(server.url());
      auto status = call(conn.get(), "org.acme.api.status", "{}");
      std::lock_guard lock(seen_mutex);
      seen_at.emplace_back(status && !status->error_code ? "status" : "status failed",
                           deploy_replies.load());
    });
    askers.emplace_back([&] {
      auto probe = testing::http_get(daemon->http_port(), "/healthz");
      std::lock_guard lock(seen_mutex);
      seen_at.emplace_back(probe && probe->status == 200 ? "healthz" : "healthz failed",
                           deploy_replies.load());
    });
  }
  for (auto& asker : askers) asker.join();
  ASSERT_EQ(seen_at.size(), 6u);
  for (const auto& [what, replies] : seen_at) {
    EXPECT_EQ(what.find("failed"), std::string::npos) << what;
    EXPECT_LT(replies, kRequests) << what << " answered only after every deploy request";
  }
  // And every deploy request is answered.
  EXPECT_TRUE(wait_until([&] { return deploy_replies.load() == kRequests; }, 60s, 50ms))
      << deploy_replies.load();
  natsSubscription_Destroy(replies);
}

}  // namespace
}  // namespace orgd
