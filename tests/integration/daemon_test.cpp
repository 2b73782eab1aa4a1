// The daemon in-process against a real nats-server: health in, status out, bad input rejected,
// state rebuilt after a restart, service discovery, HTTP endpoints, reload.
#include "daemon/app/daemon.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon/bus/streams.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"
#include "tests/support/collector.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::Collector;
using testing::connect_client;
using testing::NatsServer;
using testing::wait_until;
using v1::Health;

std::string config_yaml(const std::string& url, const std::string& extra_repos = "") {
  return "org: acme\n"
         "nats:\n  urls: [" +
         url +
         "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
         "http:\n  listen: 127.0.0.1:0\n"
         "log:\n  level: warn\n"
         "providers:\n  local: {type: local}\n"
         "repos:\n"
         "  api:\n    deploy:\n      dev: {provider: local}\n"
         "    health: {services: [http], ttl: 30s}\n"
         "  web:\n    depends_on: [api]\n    health: {services: [http]}\n"
         "  worker:\n    depends_on: [api]\n" +
         extra_repos;
}

struct Reply {
  std::string data;
  std::optional<std::string> error_code;
  std::optional<std::string> content_type;
};

std::optional<Reply> request(natsConnection* conn, const std::string& subject,
                             const std::string& data, const std::string& content_type = "") {
  natsMsg* msg = nullptr;
  natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
  if (!content_type.empty()) natsMsgHeader_Set(msg, "Content-Type", content_type.c_str());
  natsMsg* reply = nullptr;
  natsStatus s = natsConnection_RequestMsg(&reply, conn, msg, 3000);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) return std::nullopt;
  BusMessage copy = BusMessage::copy_from(reply);
  natsMsg_Destroy(reply);
  return Reply{copy.data, copy.header("Nats-Service-Error-Code"), copy.header("Content-Type")};
}

void publish(natsConnection* conn, const std::string& subject, const std::string& data) {
  natsConnection_Publish(conn, subject.c_str(), data.data(), static_cast<int>(data.size()));
  natsConnection_Flush(conn);
}

class DaemonTest : public ::testing::Test {
 protected:
  std::unique_ptr<Daemon> start_daemon(const std::string& yaml) {
    auto config = load_config_string(yaml, "test.yaml", Environment());
    DaemonOptions options;
    options.health_sweep_interval = 50ms;
    auto d = std::make_unique<Daemon>(config, options, Environment());
    d->start();
    EXPECT_TRUE(wait_until([&] { return d->ready(); }, 15s)) << "orgd never became ready";
    return d;
  }

  v1::OrgStatus status() {
    auto r = request(client.get(), "org.acme.api.status", "");
    EXPECT_TRUE(r.has_value());
    v1::OrgStatus s;
    if (r) {
      EXPECT_TRUE(decode(r->data, Encoding::json, s, 1 << 24).ok()) << r->data;
    }
    return s;
  }

  Health::Status repo_health(const std::string& name) {
    auto current = status();
    for (const auto& r : current.repos()) {
      if (r.name() == name) return r.health();
    }
    return static_cast<Health::Status>(-1);
  }

  NatsServer server;
  testing::NatsConnectionPtr client = connect_client(server.url());
};

TEST_F(DaemonTest, CreatesItsStreams) {
  auto d = start_daemon(config_yaml(server.url()));
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  for (const char* name : {kCmdStream, kEventsStream, kHealthStream, kDlqStream}) {
    jsStreamInfo* si = nullptr;
    ASSERT_EQ(js_GetStreamInfo(&si, js, name, nullptr, nullptr), NATS_OK) << name;
    EXPECT_EQ(si->Config->Replicas, 1);
    if (std::string(name) == kHealthStream) {
      EXPECT_EQ(si->Config->MaxMsgsPerSubject, 1);
    }
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  // A second start on the same server finds them and updates nothing it should not.
  d->stop();
  auto again = start_daemon(config_yaml(server.url()));
  EXPECT_TRUE(again->ready());
}

TEST_F(DaemonTest, HealthInStatusOut) {
  auto d = start_daemon(config_yaml(server.url()));
  auto initial = status();
  EXPECT_EQ(initial.org(), "acme");
  ASSERT_EQ(initial.repos_size(), 3);
  for (const auto& r : initial.repos()) EXPECT_EQ(r.health(), Health::unknown) << r.name();

  Collector events(client.get(), "org.acme.events.health.>");
  publish(client.get(), "org.acme.health.api.http",
          R"({"status":"ok","version":"1.4.2","ttlSeconds":30})");
  ASSERT_TRUE(wait_until([&] { return repo_health("api") == Health::ok; }, 5s));
  ASSERT_TRUE(wait_until([&] { return events.size() == 1; }, 5s));
  auto event = events.messages()[0];
  EXPECT_EQ(event.subject, "org.acme.events.health.api.changed");
  v1::HealthChanged changed;
  ASSERT_TRUE(decode(event.data, Encoding::json, changed, 4096).ok()) << event.data;
  EXPECT_EQ(changed.previous(), Health::unknown);
  EXPECT_EQ(changed.health(), Health::ok);

  auto repo = request(client.get(), "org.acme.api.status.repo", R"({"repo":"api"})");
  ASSERT_TRUE(repo.has_value());
  EXPECT_NE(repo->data.find(R"("version":"1.4.2")"), std::string::npos) << repo->data;

  auto repos = request(client.get(), "org.acme.api.repos", "");
  ASSERT_TRUE(repos.has_value());
  v1::RepoList list;
  ASSERT_TRUE(decode(repos->data, Encoding::json, list, 1 << 20).ok());
  ASSERT_EQ(list.repos_size(), 3);
  EXPECT_EQ(list.repos(1).depends_on(0), "api");
}

TEST_F(DaemonTest, StaleServiceGoesDown) {
  auto d = start_daemon(config_yaml(server.url()));
  publish(client.get(), "org.acme.health.web.http", R"({"status":"ok","ttlSeconds":1})");
  ASSERT_TRUE(wait_until([&] { return repo_health("web") == Health::ok; }, 5s));
  ASSERT_TRUE(wait_until([&] { return repo_health("web") == Health::down; }, 5s));
  auto web = request(client.get(), "org.acme.api.status.repo", R"({"repo":"web"})");
  ASSERT_TRUE(web.has_value());
  EXPECT_NE(web->data.find(R"("stale":true)"), std::string::npos) << web->data;
}

TEST_F(DaemonTest, BadInputIsRejectedDeadLetteredCountedAndOrgdKeepsRunning) {
  auto d = start_daemon(config_yaml(server.url()));
  Collector dlq(client.get(), "org.acme.dlq.>");

  // Malformed JSON on an API endpoint: error reply with ADR-32 headers.
  auto bad = request(client.get(), "org.acme.api.status.repo", "{nope");
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->error_code, "400");
  EXPECT_NE(bad->data.find(R"("code":"invalid_argument")"), std::string::npos);
  // Wrong type.
  auto wrong = request(client.get(), "org.acme.api.status.repo", R"({"repo":42})");
  ASSERT_TRUE(wrong.has_value());
  EXPECT_EQ(wrong->error_code, "400");
  // Unknown repo: a 404 reply, not a dead letter (a lookup, not malformed input).
  auto unknown = request(client.get(), "org.acme.api.status.repo", R"({"repo":"nope"})");
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->error_code, "404");
  // Binary garbage and an oversized payload as health reports (no reply subject).
  publish(client.get(), "org.acme.health.api.http", std::string("\x00\xff\xfe\x01", 4));
  publish(client.get(), "org.acme.health.api.http",
          R"({"status":"ok","detail":")" + std::string(300 * 1024, 'x') + R"("})");
  publish(client.get(), "org.acme.health.ghost.http", R"({"status":"ok"})");
  publish(client.get(), "org.acme.health.api", R"({"status":"ok"})");

  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 6; }, 5s)) << dlq.size();
  std::map<std::string, int> by_subject;
  for (const auto& m : dlq.messages()) {
    by_subject[m.subject]++;
    EXPECT_TRUE(m.header("Orgd-Dlq-Reason").has_value());
    EXPECT_TRUE(m.header("Orgd-Dlq-Subject").has_value());
  }
  EXPECT_EQ(by_subject["org.acme.dlq.api.status.repo"], 2);
  EXPECT_EQ(by_subject["org.acme.dlq.health.api.http"], 2);
  EXPECT_EQ(by_subject["org.acme.dlq.health.ghost.http"], 1);
  EXPECT_EQ(by_subject["org.acme.dlq.health.api"], 1);

  // The dead letters are kept by ORGD_DLQ.
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  ASSERT_TRUE(wait_until(
      [&] {
        jsStreamInfo* si = nullptr;
        if (js_GetStreamInfo(&si, js, kDlqStream, nullptr, nullptr) != NATS_OK) return false;
        bool ok = si->State.Msgs == 6;
        jsStreamInfo_Destroy(si);
        return ok;
      },
      5s));
  jsCtx_Destroy(js);

  // Counted, and orgd still serves.
  auto metrics = testing::http_get(d->http_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->body.find(
                R"(orgd_messages_rejected_total{code="invalid_argument",kind="health"} 3)"),
            std::string::npos)
      << metrics->body;
  EXPECT_EQ(metrics->body.find(R"(orgd_messages_rejected_total{code="not_found",kind="api"})"),
            std::string::npos);
  publish(client.get(), "org.acme.health.api.http", R"({"status":"ok"})");
  EXPECT_TRUE(wait_until([&] { return repo_health("api") == Health::ok; }, 5s));
}

TEST_F(DaemonTest, ProtobufRequestsGetProtobufReplies) {
  auto d = start_daemon(config_yaml(server.url()));
  v1::HealthReport report;
  report.set_status(Health::degraded);
  std::string bytes = encode(report, Encoding::protobuf);
  auto ack = request(client.get(), "org.acme.health.worker.queue", bytes, "application/protobuf");
  ASSERT_TRUE(ack.has_value());
  EXPECT_FALSE(ack->error_code.has_value());

  v1::RepoStatusRequest req;
  req.set_repo("worker");
  auto r = request(client.get(), "org.acme.api.status.repo", encode(req, Encoding::protobuf),
                   "application/protobuf");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->content_type, "application/protobuf");
  v1::RepoStatus status;
  ASSERT_TRUE(decode(r->data, Encoding::protobuf, status, 1 << 20).ok());
  EXPECT_EQ(status.health(), Health::degraded);
  EXPECT_EQ(status.services(0).name(), "queue");
}

TEST_F(DaemonTest, HealthPictureSurvivesRestart) {
  {
    auto d = start_daemon(config_yaml(server.url()));
    publish(client.get(), "org.acme.health.api.http", R"({"status":"ok","version":"7.0"})");
    publish(client.get(), "org.acme.health.web.http", R"({"status":"down"})");
    ASSERT_TRUE(wait_until([&] { return repo_health("web") == Health::down; }, 5s));
    ASSERT_TRUE(wait_until([&] { return repo_health("api") == Health::ok; }, 5s));
    d->stop();
  }
  auto d = start_daemon(config_yaml(server.url()));
  EXPECT_EQ(repo_health("api"), Health::ok);
  EXPECT_EQ(repo_health("web"), Health::down);
  auto api = request(client.get(), "org.acme.api.status.repo", R"({"repo":"api"})");
  ASSERT_TRUE(api.has_value());
  EXPECT_NE(api->data.find(R"("version":"7.0")"), std::string::npos) << api->data;
}

TEST_F(DaemonTest, ServiceDiscoveryListsOrgdWithLiveStats) {
  auto d = start_daemon(config_yaml(server.url()));
  ASSERT_TRUE(request(client.get(), "org.acme.api.status", "").has_value());
  const std::string id = d->discovery().identity().id;
  for (const std::string& subject : std::vector<std::string>{
           "$SRV.PING", "$SRV.PING.orgd", "$SRV.PING.orgd." + id, "$SRV.INFO", "$SRV.INFO.orgd",
           "$SRV.INFO.orgd." + id, "$SRV.STATS", "$SRV.STATS.orgd", "$SRV.STATS.orgd." + id}) {
    auto r = request(client.get(), subject, "");
    ASSERT_TRUE(r.has_value()) << subject;
    auto j = nlohmann::json::parse(r->data);
    EXPECT_EQ(j["name"], "orgd") << subject;
    EXPECT_EQ(j["id"], id) << subject;
  }
  auto info = nlohmann::json::parse(request(client.get(), "$SRV.INFO.orgd", "")->data);
  std::set<std::string> subjects;
  for (const auto& e : info["endpoints"]) subjects.insert(e["subject"].get<std::string>());
  EXPECT_TRUE(subjects.contains("org.acme.api.status"));
  EXPECT_TRUE(subjects.contains("org.acme.api.status.repo"));
  EXPECT_TRUE(subjects.contains("org.acme.api.repos"));
  auto stats = nlohmann::json::parse(request(client.get(), "$SRV.STATS", "")->data);
  bool counted = false;
  for (const auto& e : stats["endpoints"]) {
    if (e["subject"] == "org.acme.api.status") counted = e["num_requests"].get<int>() >= 1;
  }
  EXPECT_TRUE(counted) << stats.dump();
}

TEST_F(DaemonTest, HttpEndpoints) {
  auto d = start_daemon(config_yaml(server.url()));
  auto healthz = testing::http_get(d->http_port(), "/healthz");
  ASSERT_TRUE(healthz.has_value());
  EXPECT_EQ(healthz->status, 200);
  auto readyz = testing::http_get(d->http_port(), "/readyz");
  ASSERT_TRUE(readyz.has_value());
  EXPECT_EQ(readyz->status, 200);
  EXPECT_NE(readyz->body.find(R"("nats":"connected")"), std::string::npos);
  auto status = testing::http_get(d->http_port(), "/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->status, 200);
  EXPECT_NE(status->body.find(R"("org":"acme")"), std::string::npos);
  ASSERT_TRUE(request(client.get(), "org.acme.api.status", "").has_value());
  // The handler counts the request once its reply is sent: the reply can arrive first.
  std::optional<testing::HttpResult> metrics;
  ASSERT_TRUE(testing::wait_until(
      [&] {
        metrics = testing::http_get(d->http_port(), "/metrics");
        return metrics && metrics->body.find(
                              R"(orgd_api_request_duration_seconds_count{endpoint="status"} 1)") !=
                              std::string::npos;
      },
      10s));
  for (const char* needle :
       {"# TYPE orgd_api_request_duration_seconds histogram",
        R"(orgd_api_request_duration_seconds_count{endpoint="status"} 1)", "orgd_nats_connected 1",
        "orgd_jetstream_ready 1", "orgd_build_info{", R"(orgd_messages_in_total{kind="api"} 1)"}) {
    EXPECT_NE(metrics->body.find(needle), std::string::npos) << needle << "\n" << metrics->body;
  }
  auto missing = testing::http_get(d->http_port(), "/nope");
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 404);
}

TEST_F(DaemonTest, ReloadAppliesNewReposAndKeepsOldConfigOnErrors) {
  testing::TempDir dir;
  auto path = dir / "orgd.yaml";
  testing::write_file(path, config_yaml(server.url()));
  auto config = load_config_file(path.string(), Environment());
  DaemonOptions options;
  options.config_path = path.string();
  Daemon d(config, options, Environment());
  d.start();
  ASSERT_TRUE(wait_until([&] { return d.ready(); }, 15s));
  ASSERT_EQ(status().repos_size(), 3);

  testing::write_file(path, config_yaml(server.url(), "  billing:\n    depends_on: [api]\n"));
  EXPECT_TRUE(d.reload_from_disk());
  EXPECT_EQ(status().repos_size(), 4);

  testing::write_file(path, "org: acme\nrepos:\n  x:\n    depends_on: [missing]\n");
  EXPECT_FALSE(d.reload_from_disk());
  EXPECT_EQ(status().repos_size(), 4);
  auto metrics = testing::http_get(d.http_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->body.find(R"(orgd_config_reloads_total{result="error"} 1)"),
            std::string::npos);
  EXPECT_NE(metrics->body.find(R"(orgd_config_reloads_total{result="ok"} 1)"), std::string::npos);
}

TEST_F(DaemonTest, StartsBeforeNatsAndBecomesReadyWhenItComes) {
  server.stop();
  auto config = load_config_string(config_yaml(server.url()), "test.yaml", Environment());
  Daemon d(config, DaemonOptions{}, Environment());
  d.start();
  auto readyz = testing::http_get(d.http_port(), "/readyz");
  ASSERT_TRUE(readyz.has_value());
  EXPECT_EQ(readyz->status, 503);
  server.start();
  EXPECT_TRUE(wait_until([&] { return d.ready(); }, 15s));
  client = connect_client(server.url());
  EXPECT_EQ(status().repos_size(), 3);
}

TEST_F(DaemonTest, SurvivesNatsServerRestart) {
  auto d = start_daemon(config_yaml(server.url()));
  publish(client.get(), "org.acme.health.api.http", R"({"status":"ok"})");
  ASSERT_TRUE(wait_until([&] { return repo_health("api") == Health::ok; }, 5s));
  client.reset();
  server.restart();
  client = connect_client(server.url());
  ASSERT_TRUE(wait_until([&] { return d->ready(); }, 15s));
  // Subscriptions come back with the connection.
  ASSERT_TRUE(wait_until(
      [&] { return request(client.get(), "org.acme.api.status", "").has_value(); }, 10s));
  publish(client.get(), "org.acme.health.api.http", R"({"status":"down"})");
  EXPECT_TRUE(wait_until([&] { return repo_health("api") == Health::down; }, 5s));
}

}  // namespace
}  // namespace orgd

namespace orgd {
namespace {

// On a 3-node JetStream cluster with nats.replicas 3, orgd's streams are replicated three times,
// and health still flows.
TEST(DaemonOnCluster, StreamsCarryTheConfiguredReplicas) {
  testing::NatsCluster cluster;
  std::string urls;
  for (const auto& u : cluster.url_list()) urls += (urls.empty() ? "" : ", ") + u;
  auto config = load_config_string("org: acme\nnats:\n  urls: [" + urls +
                                       "]\n  replicas: 3\nhttp:\n  enabled: false\n"
                                       "log:\n  level: warn\nrepos:\n  api: {}\n",
                                   "cluster.yaml", Environment());
  Daemon d(config, DaemonOptions{}, Environment());
  d.start();
  ASSERT_TRUE(wait_until([&] { return d.ready(); }, 30s));
  auto client = connect_client(cluster.urls());
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, client.get(), nullptr), NATS_OK);
  for (const char* name : {kCmdStream, kEventsStream, kHealthStream, kDlqStream}) {
    jsStreamInfo* si = nullptr;
    ASSERT_EQ(js_GetStreamInfo(&si, js, name, nullptr, nullptr), NATS_OK) << name;
    EXPECT_EQ(si->Config->Replicas, 3) << name;
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  publish(client.get(), "org.acme.health.api.http", R"({"status":"ok"})");
  EXPECT_TRUE(wait_until(
      [&] {
        auto r = request(client.get(), "org.acme.api.status.repo", R"({"repo":"api"})");
        return r && r->data.find(R"("health":"ok")") != std::string::npos;
      },
      10s));
}

}  // namespace
}  // namespace orgd
