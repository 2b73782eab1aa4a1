// The remote provider over a real nats-server, with orgd's own BusRequester and a C++ responder
// in the test serving P.plugin.ext.<op>: a deploy started, polled to success; a gated phase
// advanced; a rollback; secrets sealed to the responder's key (it opens them) and a canary
// value never seen on the bus (a subscription to `>` sees every message); a credential issued
// sealed to orgd and revoked; the health probe; and the failures — a responder that never
// answers (timeout), none at all (no responders), garbage replies, orgd not connected.
#include "plugins/remote/remote_provider.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/app/bus_requester.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/core/config.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/wait.hpp"
#include "tests/unit/remote_test_support.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using ::testing::HasSubstr;
using testing::NatsServer;

constexpr const char* kSubject = "org.acme.plugin.ext";

// Serves <subject>.> from the test: each op's handler returns the reply body, or nullopt to
// leave the request unanswered. Runs on nats.c's thread.
class Responder {
 public:
  using Handler = std::function<std::optional<std::string>(const json& request)>;

  Responder(const std::string& url, const std::string& subject)
      : conn_(testing::connect_client(url)), prefix_(subject + ".") {
    if (natsConnection_Subscribe(&sub_, conn_.get(), (subject + ".>").c_str(), &Responder::on_msg,
                                 this) != NATS_OK) {
      throw std::runtime_error("subscribe failed");
    }
    natsConnection_Flush(conn_.get());
  }
  ~Responder() {
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
  }

  void on(const std::string& op, Handler handler) {
    std::lock_guard lock(mutex_);
    handlers_[op] = std::move(handler);
  }
  // Every request body an op was sent, raw.
  std::vector<std::string> received(const std::string& op) {
    std::lock_guard lock(mutex_);
    return received_[op];
  }

 private:
  static void on_msg(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Responder*>(closure);
    const std::string subject = natsMsg_GetSubject(msg);
    const std::string op = subject.substr(self->prefix_.size());
    const std::string body(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    const char* reply_to = natsMsg_GetReply(msg);
    Handler handler;
    {
      std::lock_guard lock(self->mutex_);
      self->received_[op].push_back(body);
      if (auto it = self->handlers_.find(op); it != self->handlers_.end()) handler = it->second;
    }
    std::optional<std::string> reply;
    if (!handler) {
      reply = R"({"error":{"code":"invalid_argument","message":"unknown op"}})";
    } else {
      const auto request = json::parse(body, nullptr, /*allow_exceptions=*/false);
      reply = handler(request);
    }
    if (reply && reply_to != nullptr) {
      natsConnection_Publish(nc, reply_to, reply->data(), static_cast<int>(reply->size()));
    }
    natsMsg_Destroy(msg);
  }

  testing::NatsConnectionPtr conn_;
  std::string prefix_;
  natsSubscription* sub_ = nullptr;
  std::mutex mutex_;  // guards handlers_ and received_
  std::map<std::string, Handler> handlers_;
  std::map<std::string, std::vector<std::string>> received_;
};

testing::NatsServerOptions plain_server() {
  testing::NatsServerOptions o;
  o.jetstream = false;
  o.wait_for_jetstream = false;
  return o;
}

class RemoteProviderBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsConnectionSettings settings;
    settings.urls = {server.url()};
    settings.reconnect_wait = 50ms;
    nats = std::make_unique<NatsConnection>(settings);
    nats->connect();
    ASSERT_TRUE(testing::wait_until([&] { return nats->connected(); }, 10s));
    requester->attach(nats.get());
    responder.on("describe", [this](const json& r) -> std::optional<std::string> {
      orgd_key = r.value("orgdPublicKey", "");
      return json{
          {"name", "responder"},
          {"version", "0.1"},
          {"capabilities", {"deploy_target", "secret_target", "credential_issuer", "health_probe"}},
          {"publicKey", keys.public_base64()}}
          .dump();
    });
    responder.on("validate",
                 [](const json&) -> std::optional<std::string> { return R"({"problems":[]})"; });
  }
  void TearDown() override { requester->detach(); }

  std::unique_ptr<Provider> make(const std::string& extra = "", const std::string& timeout = "3s") {
    config = load_config_string(
        "org: acme\n"
        "providers:\n  ext: {type: remote, timeout: " +
            timeout +
            ", capabilities: [deploy_target, "
            "secret_target, credential_issuer, health_probe]" +
            extra +
            "}\n"
            "repos:\n"
            "  api:\n"
            "    deploy:\n      prod: {provider: ext, service: api}\n"
            "    secret_targets:\n      - {provider: ext}\n",
        "orgd.yaml", Environment());
    ProviderEnvironment env;
    env.org = "acme";
    env.nats = requester;
    env.subject_prefix = "org.acme";
    auto provider = ProviderRegistry{}.create(config.providers.at("ext"), env, "orgd.yaml");
    remote = dynamic_cast<remote::RemoteProvider*>(provider.get());
    return provider;
  }
  std::unique_ptr<DeployTarget> deploy_target(Provider& p) {
    return p.make_deploy_target(config.repos.at("api").deploy.at("prod"), "orgd.yaml");
  }
  static DeployContext context(std::string handle = {}) {
    DeployContext c;
    c.repo = "api";
    c.env = "prod";
    c.ref = "abc123";
    c.deploy_id = "d-42";
    c.handle = std::move(handle);
    c.deadline = std::chrono::steady_clock::now() + 20s;
    return c;
  }

  NatsServer server{plain_server()};
  std::unique_ptr<NatsConnection> nats;
  std::shared_ptr<BusRequester> requester = std::make_shared<BusRequester>();
  Responder responder{server.url(), kSubject};
  testing::ProviderKeys keys;
  std::string orgd_key;
  Config config;
  remote::RemoteProvider* remote = nullptr;
};

TEST_F(RemoteProviderBusTest, ADeployIsStartedAndPolledToSuccess) {
  std::atomic<int> polls{0};
  responder.on("deploy.start", [](const json& r) -> std::optional<std::string> {
    EXPECT_EQ(r["deployId"], "d-42");
    EXPECT_EQ(r["settings"]["service"], "api");
    return json{{"status", "running"}, {"handle", "run-" + r["deployId"].get<std::string>()}}
        .dump();
  });
  responder.on("deploy.poll", [&](const json& r) -> std::optional<std::string> {
    if (r["handle"] != "run-d-42") return R"({"error":{"code":"not_found","message":"?"}})";
    return json{{"status", ++polls < 3 ? "running" : "succeeded"}, {"detail", "step"}}.dump();
  });
  auto provider = make();
  auto target = deploy_target(*provider);
  auto started = target->start(context(), {});
  ASSERT_TRUE(started) << started.error().message;
  ASSERT_EQ(started.value().handle, "run-d-42");
  DeployStatus status = DeployStatus::running;
  for (int i = 0; i < 10 && status == DeployStatus::running; ++i) {
    auto polled = target->poll(context(started.value().handle));
    ASSERT_TRUE(polled) << polled.error().message;
    status = polled.value().status;
  }
  EXPECT_EQ(status, DeployStatus::succeeded);
  EXPECT_EQ(polls.load(), 3);
  auto unknown = target->poll(context("run-other"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
}

TEST_F(RemoteProviderBusTest, AGatedPhaseIsAdvancedAndAFailedOneRolledBack) {
  responder.on("deploy.start", [](const json&) -> std::optional<std::string> {
    return R"({"status":"phase_done","handle":"h","phase":1,"detail":"10% of traffic"})";
  });
  responder.on("deploy.advance", [](const json& r) -> std::optional<std::string> {
    EXPECT_EQ(r["phasesPassed"], 1);
    return R"({"status":"succeeded","handle":"h"})";
  });
  responder.on("deploy.rollback", [](const json& r) -> std::optional<std::string> {
    if (!r.contains("previous") || r["previous"].value("deployId", "").empty()) {
      return R"({"error":{"code":"invalid_argument","message":"no previous deploy"}})";
    }
    return json{{"status", "running"}, {"handle", "rb-" + r["previous"]["ref"].get<std::string>()}}
        .dump();
  });
  auto provider = make();
  auto target = deploy_target(*provider);
  auto started = target->start(context(), {});
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::phase_done);
  EXPECT_EQ(started.value().phase, 1);
  auto ctx = context("h");
  ctx.phases_passed = 1;
  auto advanced = target->advance(ctx);
  ASSERT_TRUE(advanced);
  EXPECT_EQ(advanced.value().status, DeployStatus::succeeded);

  auto no_previous = target->rollback(context("h"), {});
  ASSERT_FALSE(no_previous);
  EXPECT_EQ(no_previous.error().retry, Retry::permanent);
  ctx.previous = PreviousDeploy{"d-41", "old", "h-41"};
  auto rolled = target->rollback(ctx, {});
  ASSERT_TRUE(rolled) << rolled.error().message;
  EXPECT_EQ(rolled.value().handle, "rb-old");
}

TEST_F(RemoteProviderBusTest, SecretValuesCrossTheBusSealedOnly) {
  auto watcher = testing::connect_client(server.url());
  testing::Collector everything(watcher.get(), ">");
  natsConnection_Flush(watcher.get());
  const std::string canary = "canary-remote-" + testing::random_hex(12);
  std::mutex mutex;
  std::map<std::string, std::string> held;  // what the responder opened
  responder.on("secret.put", [&](const json& r) -> std::optional<std::string> {
    auto opened = keys.open(r.value("sealedValue", ""));
    if (!opened) return R"({"error":{"code":"invalid_argument","message":"does not open"}})";
    std::lock_guard lock(mutex);
    held[r["name"]] = *opened;
    return "{}";
  });
  responder.on("secret.list", [&](const json&) -> std::optional<std::string> {
    std::lock_guard lock(mutex);
    json list = json::array();
    for (const auto& [name, value] : held) list.push_back({{"name", name}});
    return json{{"secrets", list}}.dump();
  });
  responder.on("secret.delete", [&](const json& r) -> std::optional<std::string> {
    std::lock_guard lock(mutex);
    if (held.erase(r.value("name", "")) == 0) {
      return R"({"error":{"code":"not_found","message":"no such secret"}})";
    }
    return "{}";
  });
  auto provider = make();
  auto target =
      provider->make_secret_target(config.repos.at("api").secret_targets.at(0), "orgd.yaml");
  ASSERT_TRUE(target->put("DATABASE_URL", Secret::from(canary)));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(held["DATABASE_URL"], canary) << "the responder opens what orgd sealed";
  }
  auto listed = target->list();
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed.value().size(), 1u);
  EXPECT_EQ(listed.value()[0].name, "DATABASE_URL");
  ASSERT_TRUE(target->remove("DATABASE_URL"));
  auto again = target->remove("DATABASE_URL");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::not_found);

  // Every request and reply went through `>`: the put's request is there, the value is not.
  ASSERT_TRUE(testing::wait_until(
      [&] {
        for (const auto& m : everything.messages()) {
          if (m.subject == std::string(kSubject) + ".secret.delete") return true;
        }
        return false;
      },
      5s));
  bool saw_put = false;
  for (const auto& m : everything.messages()) {
    const std::string data(m.data.begin(), m.data.end());
    saw_put = saw_put || m.subject == std::string(kSubject) + ".secret.put";
    EXPECT_EQ(data.find(canary), std::string::npos) << "in clear on " << m.subject;
  }
  EXPECT_TRUE(saw_put);
}

TEST_F(RemoteProviderBusTest, ACredentialIsIssuedSealedToOrgdAndRevoked) {
  auto watcher = testing::connect_client(server.url());
  testing::Collector everything(watcher.get(), ">");
  natsConnection_Flush(watcher.get());
  const std::string canary = "canary-creds-" + testing::random_hex(12);
  responder.on("issue", [&](const json& r) -> std::optional<std::string> {
    return json{{"id", "user-7"},
                {"sealedValue", testing::seal_to_base64_key(r.value("orgdPublicKey", ""), canary)}}
        .dump();
  });
  std::atomic<bool> revoked{false};
  responder.on("revoke", [&](const json& r) -> std::optional<std::string> {
    revoked = r.value("id", "") == "user-7";
    return "{}";
  });
  auto provider = make();
  auto issued = provider->credential_issuer()->issue("NATS_DEPLOYER_CREDS");
  ASSERT_TRUE(issued) << issued.error().message;
  EXPECT_EQ(issued.value().id, "user-7");
  EXPECT_EQ(issued.value().value.expose(), canary);
  EXPECT_EQ(orgd_key, remote->client()->orgd_public_key());
  ASSERT_TRUE(provider->credential_issuer()->revoke("user-7"));
  EXPECT_TRUE(revoked.load());
  ASSERT_TRUE(testing::wait_until(
      [&] {
        for (const auto& m : everything.messages()) {
          if (m.subject == std::string(kSubject) + ".revoke") return true;
        }
        return false;
      },
      5s));
  for (const auto& m : everything.messages()) {
    EXPECT_EQ(std::string(m.data.begin(), m.data.end()).find(canary), std::string::npos)
        << "in clear on " << m.subject;
  }
}

TEST_F(RemoteProviderBusTest, TheHealthProbeAsksDescribeThenHealth) {
  responder.on("health", [](const json&) -> std::optional<std::string> {
    return R"({"ok":true,"detail":"all good","rateLimitRemaining":7,"rateLimitLimit":10})";
  });
  auto provider = make();
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_TRUE(probe.value().ok) << probe.value().detail;
  EXPECT_EQ(probe.value().detail, "responder 0.1: all good");
  EXPECT_EQ(probe.value().rate_limit_remaining, 7);
  EXPECT_EQ(responder.received("describe").size(), 1u);
}

TEST_F(RemoteProviderBusTest, AResponderThatNeverAnswersTimesOutWithinTheTimeout) {
  responder.on("deploy.poll",
               [](const json&) -> std::optional<std::string> { return std::nullopt; });
  auto provider = make("", "300ms");
  auto target = deploy_target(*provider);
  auto polled = target->poll(context("h"));
  ASSERT_FALSE(polled);
  EXPECT_EQ(polled.error().code, ErrorCode::unavailable);
  EXPECT_EQ(polled.error().retry, Retry::retryable);
  EXPECT_THAT(polled.error().message,
              HasSubstr("remote provider ext: deploy.poll: no reply on org.acme.plugin.ext."
                        "deploy.poll within 300 ms"));
  EXPECT_EQ(remote->client()->stats().unanswered, 1);
}

TEST_F(RemoteProviderBusTest, NoRespondersAndNoConnectionAreUnavailable) {
  auto provider = make(", subject: org.acme.plugin.nobody");
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_FALSE(probe.value().ok);
  EXPECT_THAT(probe.value().detail, HasSubstr("no responders on org.acme.plugin.nobody.describe"));

  requester->detach();
  auto offline = make();
  auto r = deploy_target(*offline)->poll(context("h"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("not connected to NATS"));
}

TEST_F(RemoteProviderBusTest, GarbageRepliesAreCountedAndTheProviderKeepsWorking) {
  std::atomic<int> n{0};
  responder.on("deploy.poll", [&](const json&) -> std::optional<std::string> {
    switch (n++) {
      case 0:
        return std::string("\x00\x01\x02garbage", 10);
      case 1:
        return R"({"status":42})";
      case 2:
        return R"([{"status":"running"}])";
      case 3:
        return R"({"status":"running","handle":{"nested":true}})";
      default:
        return R"({"status":"running"})";
    }
  });
  auto provider = make();
  auto target = deploy_target(*provider);
  for (int i = 0; i < 4; ++i) {
    auto r = target->poll(context("h"));
    ASSERT_FALSE(r) << i;
    EXPECT_THAT(r.error().message, HasSubstr("remote provider ext: deploy.poll: malformed reply"));
  }
  auto fine = target->poll(context("h"));
  ASSERT_TRUE(fine) << fine.error().message;
  EXPECT_EQ(fine.value().status, DeployStatus::running);
  EXPECT_EQ(remote->client()->stats().malformed, 4);
}

}  // namespace
}  // namespace orgd
