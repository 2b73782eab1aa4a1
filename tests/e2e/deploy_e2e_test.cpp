// Deploy orchestration end to end (DESIGN.md §4, §8, §10): the built orgd as child processes on a
// real nats-server (one, or a 3-node cluster), SIGKILLed and restarted mid-deploy. A deploy is
// durable (its record is in KV before the reply), resumable (another process picks it up once
// the runner's lease expires) and runs each step once: the local provider appends a line to
// <data_dir>/local/<repo>/<env>/executions.log per start(), shared by every orgd of a test, so
// counting lines counts executions across processes.
//
// Leases are short (lease_ttl: 2s) so a dead runner's deploy is resumed within a few seconds;
// every wait is a condition with a deadline.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"
#include "tests/support/collector.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#ifndef ORGD_DAEMON_BINARY
#error "ORGD_DAEMON_BINARY must name the built orgd"
#endif

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Collector;
using testing::NatsCluster;
using testing::NatsServer;
using testing::kOutsideEnv;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::wait_until;
using v1::DeployEvent;
using v1::DeployRecord;
using v1::DeployStep;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "org.acme";
constexpr const char* kEnv = "dev";


std::string subject(const std::string& rest) { return std::string(kPrefix) + "." + rest; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// orgd's config: api <- web, api <- worker, each deployed to env dev by the local provider.

struct DeployConfig {
  std::vector<std::string> urls;
  int replicas = 1;
  // Where the local provider keeps its release records: shared by every orgd of a test.
  fs::path data_dir;
  // Long enough for a test to see api's step running (and kill or cut off its orgd then) when
  // polling on a loaded machine.
  std::string api_duration = "3s";
  std::string web_duration = "1500ms";
  std::string worker_duration = "1500ms";
};

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

// HTTP on port 0: orgd reports the port it bound in its ports file.
std::string deploy_yaml(const DeployConfig& c) {
  return fmt::format(R"(org: acme
nats:
  urls: [{urls}]
  replicas: {replicas}
  connect_timeout: 2s
  reconnect_wait: 100ms
  data_dir: {data_dir}
http:
  listen: 127.0.0.1:0
log:
  level: info
  format: text
deploy:
  lease_ttl: 2s
  health_gate: false
providers:
  local: {{type: local}}
repos:
  api:
    deploy:
      dev: {{provider: local, duration: {api}}}
  web:
    depends_on: [api]
    deploy:
      dev: {{provider: local, duration: {web}}}
  worker:
    depends_on: [api]
    deploy:
      dev: {{provider: local, duration: {worker}}}
)",
                     fmt::arg("urls", join(c.urls, ", ")), fmt::arg("replicas", c.replicas),
                     fmt::arg("data_dir", c.data_dir.string()), fmt::arg("api", c.api_duration),
                     fmt::arg("web", c.web_duration), fmt::arg("worker", c.worker_duration));
}

// One orgd child: its config in its own temp dir, HTTP on the port it reports in its ports file
// (for /readyz).
class Orgd {
 public:
  Orgd(const DeployConfig& config, std::string name) : name_(std::move(name)), dir_("orgd-deploy") {
    const fs::path config_path = dir_ / "orgd.yaml";
    ports_path_ = dir_ / "ports.json";
    testing::write_file(config_path, deploy_yaml(config));
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", config_path.string(), "--ports-file",
                    ports_path_.string()};
    options.unset_env = kOutsideEnv;
    options.cwd = dir_.path();
    process_ = std::make_unique<Subprocess>(std::move(options));
  }

  const std::string& name() const { return name_; }
  Subprocess& process() { return *process_; }
  std::string logs() const { return process_->stdout_text() + process_->stderr_text(); }

  // /readyz says 200: connected, streams and deploy buckets ready, API subscribed.
  bool wait_ready(std::chrono::milliseconds deadline = 30s) {
    const auto until = SteadyClock::now() + deadline;
    if (http_port_ == 0) {
      const auto ports =
          testing::wait_for_ports_file(ports_path_, deadline, [&] { return process_->running(); });
      if (!ports || ports->http == 0) return false;
      http_port_ = ports->http;
    }
    wait_until(
        [&] {
          if (!process_->running()) return true;
          auto r = testing::http_get(http_port_, "/readyz");
          return r && r->status == 200;
        },
        std::max(std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now()),
                 0ms));
    auto r = testing::http_get(http_port_, "/readyz");
    return process_->running() && r && r->status == 200;
  }

  void sigkill() {
    ASSERT_TRUE(process_->signal(SIGKILL)) << describe();
    ASSERT_EQ(process_->wait_for_exit(10s), -SIGKILL) << describe();
  }

  // For assertion messages: the exit state and the whole log (deploy lines are few).
  std::string describe() {
    return "--- orgd " + name_ + ": " + process_->describe() + "\n--- log of " + name_ + ":\n" +
           logs();
  }

 private:
  std::string name_;
  TempDir dir_;
  fs::path ports_path_;
  std::uint16_t http_port_ = 0;  // known once the ports file was read
  std::unique_ptr<Subprocess> process_;
};

// ---------------------------------------------------------------------------------------------
// The API over NATS

struct Reply {
  std::string data;
  std::optional<std::string> error_code;  // Nats-Service-Error-Code
};

std::optional<Reply> call(natsConnection* conn, const std::string& api_op, const std::string& body,
                          std::chrono::milliseconds timeout = 15s) {
  natsMsg* reply = nullptr;
  const std::string subj = subject("api." + api_op);
  const natsStatus s =
      natsConnection_Request(&reply, conn, subj.c_str(), body.data(), static_cast<int>(body.size()),
                             static_cast<std::int64_t>(timeout.count()));
  if (s != NATS_OK) return std::nullopt;
  BusMessage copy = BusMessage::copy_from(reply);
  natsMsg_Destroy(reply);
  return Reply{copy.data, copy.header("Nats-Service-Error-Code")};
}

std::string deploy_body(const std::vector<std::string>& repos, const std::string& ref) {
  nlohmann::json body = {{"repos", repos}, {"env", kEnv}, {"ref", ref}};
  return body.dump();
}

// Requests a deploy; the accepted id, or "" (with a test failure naming the reply).
std::string request_deploy(natsConnection* conn, const std::vector<std::string>& repos,
                           const std::string& ref) {
  auto reply = call(conn, "deploy", deploy_body(repos, ref));
  if (!reply) {
    ADD_FAILURE() << "P.api.deploy got no reply";
    return {};
  }
  if (reply->error_code) {
    ADD_FAILURE() << "P.api.deploy refused (" << *reply->error_code << "): " << reply->data;
    return {};
  }
  v1::DeployAccepted accepted;
  if (!decode(reply->data, Encoding::json, accepted, 1 << 20)) {
    ADD_FAILURE() << "undecodable DeployAccepted: " << reply->data;
    return {};
  }
  EXPECT_FALSE(accepted.deploy_id().empty()) << reply->data;
  return accepted.deploy_id();
}

std::optional<DeployRecord> get_record(natsConnection* conn, const std::string& id) {
  auto reply = call(conn, "deploy.get", R"({"deployId":")" + id + R"("})", 2s);
  if (!reply || reply->error_code) return std::nullopt;
  DeployRecord record;
  if (!decode(reply->data, Encoding::json, record, 1 << 22)) return std::nullopt;
  return record;
}

// The record as stored in KV (orgd_deploys, key deploy.<id>, binary protobuf), read with a
// JetStream direct get: what a replica finds when no orgd is alive to answer P.api.deploy.get.
std::optional<DeployRecord> stored_record(natsConnection* conn, const std::string& id) {
  const std::string subj = "$JS.API.DIRECT.GET.KV_orgd_deploys.$KV.orgd_deploys.deploy." + id;
  natsMsg* reply = nullptr;
  if (natsConnection_Request(&reply, conn, subj.c_str(), nullptr, 0, 10000) != NATS_OK) {
    return std::nullopt;
  }
  BusMessage copy = BusMessage::copy_from(reply);
  natsMsg_Destroy(reply);
  if (copy.header("Status")) return std::nullopt;  // 404: no such key
  DeployRecord record;
  if (!record.ParseFromString(copy.data)) return std::nullopt;
  return record;
}

bool is_finished(const DeployRecord& record) {
  return record.state() != DeployRecord::pending && record.state() != DeployRecord::running;
}

// Waits for the deploy to reach a final state; the last record seen (check its state).
DeployRecord wait_finished(natsConnection* conn, const std::string& id,
                           std::chrono::milliseconds deadline) {
  DeployRecord last;
  wait_until(
      [&] {
        auto record = get_record(conn, id);
        if (!record) return false;
        last = *record;
        return is_finished(last);
      },
      deadline, 50ms);
  return last;
}

const DeployStep* find_step(const DeployRecord& record, const std::string& repo) {
  for (const auto& s : record.steps()) {
    if (s.repo() == repo) return &s;
  }
  return nullptr;
}

// The ids of the orgd instances answering $SRV.PING.orgd (ADR-32), once `expected` answered.
std::set<std::string> orgd_ids(natsConnection* conn, std::size_t expected,
                               std::chrono::milliseconds deadline = 20s) {
  natsInbox* inbox = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK) return {};
  const std::string inbox_subject = inbox;
  natsInbox_Destroy(inbox);
  Collector replies(conn, inbox_subject);
  std::set<std::string> ids;
  wait_until(
      [&] {
        if (natsConnection_PublishRequestString(conn, "$SRV.PING.orgd", inbox_subject.c_str(),
                                                "") != NATS_OK ||
            natsConnection_Flush(conn) != NATS_OK) {
          return false;
        }
        wait_until([&] { return replies.size() >= expected; }, 300ms);
        for (const auto& m : replies.messages()) {
          const auto j = nlohmann::json::parse(m.data, nullptr, false);
          if (j.is_object() && j.contains("id") && j["id"].is_string()) {
            ids.insert(j["id"].get<std::string>());
          }
        }
        return ids.size() >= expected;
      },
      deadline, 100ms);
  return ids;
}

// Lines of <data_dir>/local/<repo>/dev/executions.log: one per start() of any orgd process.
int executions(const fs::path& data_dir, const std::string& repo) {
  std::ifstream in(data_dir / "local" / repo / kEnv / "executions.log");
  int n = 0;
  std::string line;
  while (std::getline(in, line)) n += line.empty() ? 0 : 1;
  return n;
}

std::string executions_log(const fs::path& data_dir, const std::string& repo) {
  return testing::read_file(data_dir / "local" / repo / kEnv / "executions.log");
}

// Decoded deploy events of one deploy, log lines left out, in arrival order.
std::vector<DeployEvent> events_of(Collector& events, const std::string& deploy_id) {
  std::vector<DeployEvent> out;
  for (const auto& m : events.messages()) {
    DeployEvent event;
    if (!decode(m.data, Encoding::json, event, 1 << 20)) continue;
    if (event.kind() == "log" || event.deploy_id() != deploy_id) continue;
    out.push_back(event);
  }
  return out;
}

std::string describe_events(const std::vector<DeployEvent>& events) {
  std::string out;
  for (const auto& e : events) {
    out += e.kind() + (e.step().repo().empty() ? "" : " " + e.step().repo()) + "\n";
  }
  return out;
}

bool has_event(const std::vector<DeployEvent>& events, const std::string& kind) {
  return std::any_of(events.begin(), events.end(),
                     [&](const DeployEvent& e) { return e.kind() == kind; });
}

// Every step of a finished deploy succeeded on its first attempt, and its repo ran exactly once.
void expect_each_step_ran_once(const DeployRecord& record, const fs::path& data_dir,
                               const std::vector<std::string>& repos) {
  ASSERT_EQ(record.steps_size(), static_cast<int>(repos.size())) << record.DebugString();
  for (const auto& repo : repos) {
    const DeployStep* step = find_step(record, repo);
    ASSERT_NE(step, nullptr) << "no step " << repo << "\n" << record.DebugString();
    EXPECT_EQ(step->state(), DeployStep::succeeded) << repo << "\n" << record.DebugString();
    EXPECT_EQ(step->attempts(), 1) << repo << "\n" << record.DebugString();
    EXPECT_EQ(executions(data_dir, repo), 1)
        << repo << " did not run exactly once; executions.log:\n"
        << executions_log(data_dir, repo);
  }
}

const std::vector<std::string> kAllRepos = {"api", "web", "worker"};

std::chrono::milliseconds since(SteadyClock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start);
}

// ---------------------------------------------------------------------------------------------
// (1) SIGKILL orgd mid-deploy, start another: the deploy resumes, no step runs twice.

TEST(DeployE2e, SigkillMidDeployThenRestartResumesWithoutRunningAnyStepTwice) {
  NatsServer server;
  TempDir data("orgd-deploy-data");
  const DeployConfig config{{server.url()}, 1, data.path()};
  auto client = testing::connect_client(server.url());
  Collector events(client.get(), subject("events.deploy.>"));

  Orgd first(config, "first");
  ASSERT_TRUE(first.wait_ready()) << first.describe();
  const auto first_ids = orgd_ids(client.get(), 1);
  ASSERT_EQ(first_ids.size(), 1U) << first.describe();

  const std::string id = request_deploy(client.get(), kAllRepos, "e2e-sigkill");
  ASSERT_FALSE(id.empty()) << first.describe();

  // api has started (its release record and execution line exist) and is running.
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get_record(client.get(), id);
        const DeployStep* api = record ? find_step(*record, "api") : nullptr;
        return api != nullptr && api->state() == DeployStep::running &&
               executions(data.path(), "api") == 1;
      },
      30s))
      << first.describe();
  first.sigkill();
  const auto killed_at = SteadyClock::now();
  {
    auto record = stored_record(client.get(), id);
    ASSERT_TRUE(record.has_value()) << "the deploy record must outlive its runner";
    EXPECT_EQ(record->owner(), *first_ids.begin()) << record->DebugString();
    EXPECT_FALSE(is_finished(*record)) << record->DebugString();
  }

  Orgd second(config, "second");
  ASSERT_TRUE(second.wait_ready()) << second.describe();
  const DeployRecord record = wait_finished(client.get(), id, 60s);
  const auto resumed_after = since(killed_at);
  ASSERT_EQ(record.state(), DeployRecord::succeeded)
      << record.DebugString() << first.describe() << second.describe();
  EXPECT_NE(record.owner(), *first_ids.begin()) << "the second orgd should own the deploy now";
  expect_each_step_ran_once(record, data.path(), kAllRepos);

  ASSERT_TRUE(wait_until([&] { return has_event(events_of(events, id), "finished"); }, 20s))
      << describe_events(events_of(events, id));
  const auto seen = events_of(events, id);
  EXPECT_TRUE(has_event(seen, "resumed")) << "no 'resumed' event:\n" << describe_events(seen);
  EXPECT_EQ(seen.front().kind(), "accepted") << describe_events(seen);
  EXPECT_EQ(seen.back().kind(), "finished") << describe_events(seen);
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(),
                          [](const DeployEvent& e) { return e.kind() == "step_started"; }),
            3)
      << "each step starts once:\n"
      << describe_events(seen);
  std::cout << "[ timing   ] finished " << resumed_after.count() << " ms after the SIGKILL\n";
}

// ---------------------------------------------------------------------------------------------
// (2) Two replicas on a 3-node cluster: SIGKILL the one running the deploy, the other finishes.

TEST(DeployE2e, ReplicaRunningTheDeployIsKilledAndTheOtherFinishesIt) {
  NatsCluster cluster;
  TempDir data("orgd-deploy-data");
  const DeployConfig config{cluster.url_list(), 3, data.path()};
  auto client = testing::connect_client(cluster.urls());
  Collector events(client.get(), subject("events.deploy.>"));

  // Started one after the other, so each replica's $SRV id is known.
  auto a = std::make_unique<Orgd>(config, "a");
  ASSERT_TRUE(a->wait_ready(30s)) << a->describe();
  const auto a_ids = orgd_ids(client.get(), 1);
  ASSERT_EQ(a_ids.size(), 1U) << a->describe();
  auto b = std::make_unique<Orgd>(config, "b");
  ASSERT_TRUE(b->wait_ready(30s)) << b->describe();
  auto both = orgd_ids(client.get(), 2);
  ASSERT_EQ(both.size(), 2U) << a->describe() << b->describe();
  both.erase(*a_ids.begin());
  const std::map<std::string, Orgd*> replica_of = {{*a_ids.begin(), a.get()},
                                                   {*both.begin(), b.get()}};

  const std::string id = request_deploy(client.get(), kAllRepos, "e2e-replicas");
  ASSERT_FALSE(id.empty()) << a->describe() << b->describe();

  std::string runner;
  ASSERT_TRUE(wait_until(
      [&] {
        auto record = get_record(client.get(), id);
        const DeployStep* api = record ? find_step(*record, "api") : nullptr;
        if (api == nullptr || api->state() != DeployStep::running ||
            executions(data.path(), "api") != 1) {
          return false;
        }
        runner = record->owner();
        return true;
      },
      30s))
      << a->describe() << b->describe();
  ASSERT_EQ(replica_of.count(runner), 1U) << "owner " << runner << " is neither replica";
  Orgd* dead = replica_of.at(runner);
  Orgd* survivor = dead == a.get() ? b.get() : a.get();
  std::string survivor_id;
  for (const auto& [replica_id, replica] : replica_of) {
    if (replica == survivor) survivor_id = replica_id;
  }
  dead->sigkill();
  const auto killed_at = SteadyClock::now();

  const DeployRecord record = wait_finished(client.get(), id, 60s);
  const auto finished_after = since(killed_at);
  ASSERT_EQ(record.state(), DeployRecord::succeeded)
      << record.DebugString() << a->describe() << b->describe();
  EXPECT_EQ(record.owner(), survivor_id)
      << "the surviving replica " << survivor->name() << " should have taken the deploy over";
  expect_each_step_ran_once(record, data.path(), kAllRepos);
  EXPECT_TRUE(survivor->process().running()) << survivor->describe();

  ASSERT_TRUE(wait_until([&] { return has_event(events_of(events, id), "finished"); }, 20s))
      << describe_events(events_of(events, id));
  EXPECT_TRUE(has_event(events_of(events, id), "resumed"))
      << describe_events(events_of(events, id));
  std::cout << "[ timing   ] replica " << dead->name() << " killed; " << survivor->name()
            << " finished the deploy " << finished_after.count() << " ms later\n";
}

// ---------------------------------------------------------------------------------------------
// (3) nats-server restarts while steps run: the deploy still completes, each step once.

// Requests a deploy of every repo through a client of its own and waits until api's step runs
// (started: its execution line exists); the deploy's id.
std::string deploy_until_api_runs(const std::string& url, const fs::path& data_dir,
                                  const std::string& ref, Orgd& orgd) {
  auto client = testing::connect_client(url);
  const std::string id = request_deploy(client.get(), kAllRepos, ref);
  if (id.empty()) return id;
  EXPECT_TRUE(wait_until(
      [&] {
        auto record = get_record(client.get(), id);
        const DeployStep* api = record ? find_step(*record, "api") : nullptr;
        return api != nullptr && api->state() == DeployStep::running &&
               executions(data_dir, "api") == 1;
      },
      30s))
      << orgd.describe();
  return id;
}

TEST(DeployE2e, NatsServerRestartMidDeployStillCompletesEachStepOnce) {
  NatsServer server;
  TempDir data("orgd-deploy-data");
  const DeployConfig config{{server.url()}, 1, data.path()};
  Orgd orgd(config, "orgd");
  ASSERT_TRUE(orgd.wait_ready()) << orgd.describe();
  const std::string id = deploy_until_api_runs(server.url(), data.path(), "e2e-restart", orgd);
  ASSERT_FALSE(id.empty());

  const auto restart_began = SteadyClock::now();
  server.restart();
  const auto restart_took = since(restart_began);

  auto client = testing::connect_client(server.url());
  const DeployRecord record = wait_finished(client.get(), id, 60s);
  ASSERT_EQ(record.state(), DeployRecord::succeeded)
      << record.DebugString() << orgd.describe() << server.log_text();
  expect_each_step_ran_once(record, data.path(), kAllRepos);
  EXPECT_TRUE(orgd.process().running()) << orgd.describe();
  EXPECT_TRUE(contains(orgd.logs(), "disconnected from NATS"))
      << "orgd should have seen the restart\n"
      << orgd.describe();
  std::cout << "[ timing   ] nats-server restart took " << restart_took.count()
            << " ms; deploy finished " << since(restart_began).count() << " ms after it began\n";
}

// NATS down for longer than lease_ttl while a step finishes: the runner cannot write the step's
// success, its lease and locks expire meanwhile; once NATS is back it writes it, keeps the deploy
// (nobody else took it) and finishes without starting anything twice.
TEST(DeployE2e, NatsDownLongerThanTheLeaseMidDeployStillCompletesEachStepOnce) {
  NatsServer server;
  TempDir data("orgd-deploy-data");
  const DeployConfig config{{server.url()}, 1, data.path()};
  Orgd orgd(config, "orgd");
  ASSERT_TRUE(orgd.wait_ready()) << orgd.describe();
  const std::string id = deploy_until_api_runs(server.url(), data.path(), "e2e-outage", orgd);
  ASSERT_FALSE(id.empty());

  server.stop();
  const auto stopped_at = SteadyClock::now();
  // api's provider deploy ends during the outage (the local provider needs no NATS): its success
  // is the record write that has to wait.
  ASSERT_TRUE(wait_until([&] { return contains(orgd.logs(), "cannot write the record"); }, 30s))
      << orgd.describe();
  // The outage itself is the fault injected: it lasts past lease_ttl (2 s), so every lease and
  // lock of the deploy has expired when the server comes back.
  std::this_thread::sleep_until(stopped_at + 2500ms);
  server.start();
  const auto outage = since(stopped_at);

  auto client = testing::connect_client(server.url());
  const DeployRecord record = wait_finished(client.get(), id, 60s);
  ASSERT_EQ(record.state(), DeployRecord::succeeded)
      << record.DebugString() << orgd.describe() << server.log_text();
  expect_each_step_ran_once(record, data.path(), kAllRepos);
  EXPECT_TRUE(orgd.process().running()) << orgd.describe();
  std::cout << "[ timing   ] NATS down " << outage.count() << " ms; deploy finished "
            << since(stopped_at).count() << " ms after the server stopped\n";
}

// ---------------------------------------------------------------------------------------------
// (4) The lock of a dead runner's deploy: no second deploy of the repo while the first is
// unfinished (neither before another replica resumed it nor while it runs), one afterwards.

TEST(DeployE2e, DeadRunnersDeployKeepsItsLockUntilResumedAndFinished) {
  NatsServer server;
  TempDir data("orgd-deploy-data");
  DeployConfig config{{server.url()}, 1, data.path()};
  config.api_duration = "4s";
  auto client = testing::connect_client(server.url());

  Orgd a(config, "a");
  ASSERT_TRUE(a.wait_ready()) << a.describe();
  const auto a_ids = orgd_ids(client.get(), 1);
  ASSERT_EQ(a_ids.size(), 1U) << a.describe();
  const std::string first = request_deploy(client.get(), {"api"}, "e2e-lock-1");
  ASSERT_FALSE(first.empty()) << a.describe();
  ASSERT_TRUE(wait_until([&] { return executions(data.path(), "api") == 1; }, 30s)) << a.describe();
  a.sigkill();

  Orgd b(config, "b");
  ASSERT_TRUE(b.wait_ready()) << b.describe();
  // From the moment B answers until the first deploy's steps are all done: every new deploy of
  // api is refused with 409 (the deploy holds the repo while its runner is dead and after B
  // resumed it). A finishing deploy gives its locks up once no step of it can run any more,
  // just before its record says finished: an acceptance is legitimate only if, read right
  // after it, the first deploy has no step left to run (steps never go back).
  std::vector<std::string> accepted_meanwhile;
  std::string accepted_at_the_end;  // the deploy id of a legitimate late acceptance
  std::vector<std::string> other_replies;  // neither accepted nor 409 naming the first deploy
  int conflicts = 0;
  DeployRecord record;
  const bool finished = wait_until(
      [&] {
        // The record first: a request sent after the deploy finished may rightly be accepted.
        auto before = get_record(client.get(), first);
        if (before && is_finished(*before)) {
          record = *before;
          return true;
        }
        auto reply = call(client.get(), "deploy", deploy_body({"api"}, "e2e-lock-2"), 15s);
        if (!reply) {
          other_replies.push_back("(no reply)");
        } else if (reply->error_code == "409" && contains(reply->data, first)) {
          ++conflicts;
        } else if (!reply->error_code) {
          auto after = get_record(client.get(), first);
          const bool steps_done =
              after && std::all_of(after->steps().begin(), after->steps().end(),
                                   [](const DeployStep& s) {
                                     return s.state() != DeployStep::pending &&
                                            s.state() != DeployStep::running;
                                   });
          if (steps_done) {
            const auto accepted = nlohmann::json::parse(reply->data, nullptr, false);
            accepted_at_the_end = accepted.is_object() ? accepted.value("deployId", "") : "";
          } else {
            accepted_meanwhile.push_back(reply->data);
          }
        } else {
          other_replies.push_back(*reply->error_code + " " + reply->data);
        }
        return false;
      },
      60s, 20ms);
  ASSERT_TRUE(finished) << record.DebugString() << b.describe();
  EXPECT_TRUE(accepted_meanwhile.empty())
      << accepted_meanwhile.size() << " deploy(s) of api accepted while deploy " << first
      << " (holding api/dev, its runner dead) was unfinished; first: " << accepted_meanwhile.front()
      << "\n"
      << a.describe() << b.describe();
  EXPECT_TRUE(other_replies.empty())
      << other_replies.size() << " replies were neither an acceptance nor a 409 naming " << first
      << "; first: " << other_replies.front();
  EXPECT_GT(conflicts, 0);
  EXPECT_EQ(record.state(), DeployRecord::succeeded) << record.DebugString();
  EXPECT_NE(record.owner(), *a_ids.begin()) << "B should have resumed the deploy";

  if (accepted_meanwhile.empty()) {
    // Finished: the lock is free for the next deploy, which runs api once more (unless one was
    // accepted at the very end already).
    const std::string second = accepted_at_the_end.empty()
                                   ? request_deploy(client.get(), {"api"}, "e2e-lock-3")
                                   : accepted_at_the_end;
    ASSERT_FALSE(second.empty()) << b.describe();
    EXPECT_NE(second, first);
    const DeployRecord next = wait_finished(client.get(), second, 60s);
    EXPECT_EQ(next.state(), DeployRecord::succeeded) << next.DebugString() << b.describe();
    EXPECT_EQ(executions(data.path(), "api"), 2) << "one execution per deploy:\n"
                                                 << executions_log(data.path(), "api");
  }
}

}  // namespace
}  // namespace orgd
