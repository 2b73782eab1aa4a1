// The remote provider without a bus: its settings (file:line:key), target settings as JSON, the
// plugin messages' codec and error mapping, and every capability against a scripted requester
// — deadlines, describe's capability check, sealing both ways, and hostile replies (garbage,
// wrong types, oversized, missing fields) giving clear errors that are counted.
#include "plugins/remote/remote_provider.hpp"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/remote/plugin_messages.hpp"
#include "plugins/remote/remote_settings.hpp"
#include "tests/unit/remote_test_support.hpp"

namespace orgd::remote {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ProviderKeys;
using testing::ScriptedRequester;
using json = nlohmann::json;

constexpr const char* kSubject = "org.acme.plugin.ext";

Config load(const std::string& yaml) {
  return load_config_string(yaml, "orgd.yaml", Environment());
}

Settings parse(const std::string& block) {
  const Config config = load("org: acme\nproviders:\n  ext:\n    type: remote\n" + block);
  return parse_settings(config.providers.at("ext"), "orgd.yaml", "org.acme", "acme");
}

std::string problems(const std::string& block) {
  try {
    (void)parse(block);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// --- settings ------------------------------------------------------------------------------

TEST(RemoteSettingsTest, Defaults) {
  const Settings s = parse("");
  EXPECT_EQ(s.name, "ext");
  EXPECT_EQ(s.subject, "org.acme.plugin.ext");
  EXPECT_EQ(s.timeout, std::chrono::seconds{30});
  EXPECT_TRUE(s.capabilities.deploy_target);
  EXPECT_TRUE(s.capabilities.health_probe);
  EXPECT_FALSE(s.capabilities.secret_target);
  EXPECT_FALSE(s.capabilities.credential_issuer);
}

TEST(RemoteSettingsTest, EveryKeyRead) {
  const Settings s = parse(
      "    subject: teams.payments.provider\n"
      "    timeout: 2s\n"
      "    capabilities: [secret_target, credential_issuer]\n");
  EXPECT_EQ(s.subject, "teams.payments.provider");
  EXPECT_EQ(s.timeout, std::chrono::seconds{2});
  EXPECT_FALSE(s.capabilities.deploy_target);
  EXPECT_FALSE(s.capabilities.health_probe);
  EXPECT_TRUE(s.capabilities.secret_target);
  EXPECT_TRUE(s.capabilities.credential_issuer);
}

TEST(RemoteSettingsTest, ProblemsNameFileLineAndKey) {
  EXPECT_THAT(problems("    subject: 'a.*.b'\n"), HasSubstr("orgd.yaml:5: providers.ext.subject"));
  EXPECT_THAT(problems("    subject: 'a..b'\n"), HasSubstr("is not a NATS subject"));
  EXPECT_THAT(problems("    timeout: 10ms\n"),
              HasSubstr("orgd.yaml:5: providers.ext.timeout: must be between 100ms and 5m"));
  EXPECT_THAT(problems("    capabilities: [deploy_target, teleport]\n"),
              HasSubstr("unknown capability \"teleport\""));
  EXPECT_THAT(problems("    capabilities: []\n"), HasSubstr("at least one capability"));
  EXPECT_THAT(problems("    subjekt: x\n"), HasSubstr("orgd.yaml:5: providers.ext.subjekt"));
}

TEST(RemoteSettingsTest, SubjectRules) {
  EXPECT_TRUE(valid_request_subject("org.acme.plugin.ext"));
  EXPECT_TRUE(valid_request_subject("a"));
  EXPECT_FALSE(valid_request_subject(""));
  EXPECT_FALSE(valid_request_subject("a."));
  EXPECT_FALSE(valid_request_subject(".a"));
  EXPECT_FALSE(valid_request_subject("a b"));
  EXPECT_FALSE(valid_request_subject("a.>"));
}

TEST(RemoteSettingsTest, TheRegistryBuildsItWithTheDaemonsPrefix) {
  const Config config =
      load("org: acme\nnats: {subject_prefix: corp.acme}\nproviders:\n  ext: {type: remote}\n");
  ProviderEnvironment env;
  env.org = "acme";
  env.subject_prefix = config.prefix();
  auto provider = ProviderRegistry{}.create(config.providers.at("ext"), env, "orgd.yaml");
  auto* remote = dynamic_cast<RemoteProvider*>(provider.get());
  ASSERT_NE(remote, nullptr);
  EXPECT_EQ(remote->settings().subject, "corp.acme.plugin.ext");
  EXPECT_EQ(provider->type(), "remote");
  EXPECT_NE(provider->health_probe(), nullptr);
  EXPECT_EQ(provider->credential_issuer(), nullptr);
}

TEST(RemoteSettingsTest, TargetSettingsThatJsonCannotHoldAreConfigErrors) {
  const Config config = load(
      "org: acme\n"
      "providers:\n  ext: {type: remote}\n"
      "repos:\n"
      "  api:\n"
      "    deploy:\n"
      "      prod:\n"
      "        provider: ext\n"
      "        weight: .inf\n");
  try {
    ProviderEnvironment env;
    env.org = "acme";
    (void)deploy::Inventory::build(config, ProviderRegistry{}, env);
    FAIL() << "infinity accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("orgd.yaml:9: repos.api.deploy.prod.weight"));
  }
}

// --- codec ---------------------------------------------------------------------------------

std::string as_json(const google::protobuf::Message& m) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out);
  return out;
}

TEST(RemoteMessagesTest, YamlSettingsBecomeJsonWithYamlsScalarTypes) {
  const YAML::Node node = YAML::Load(
      "provider: ext\nreplicas: 3\nratio: 0.5\nenabled: true\nname: web\nquoted: '10'\n"
      "empty: ~\nsteps: [10, 100]\nnested: {a: {b: [x, false]}}\nstep_timeout: 5m\n");
  std::vector<SettingsProblem> found;
  const auto settings = settings_struct(node, "deploy.prod", 1, reserved_target_keys(), found);
  EXPECT_TRUE(found.empty());
  const auto j = json::parse(as_json(settings));
  EXPECT_EQ(j, json::parse(R"({"replicas":3,"ratio":0.5,"enabled":true,"name":"web",
      "quoted":"10","empty":null,"steps":[10,100],"nested":{"a":{"b":["x",false]}}})"))
      << "orgd's own keys (provider, step_timeout) are not the provider's";
}

TEST(RemoteMessagesTest, ReplyDecoding) {
  ReplyFault fault;
  v1::PluginDeployReply reply;
  ASSERT_TRUE(decode_reply(R"({"status":"phase_done","handle":"h","phase":1,"extra":{"a":1}})",
                           1024, "p", reply, fault));
  EXPECT_EQ(fault, ReplyFault::none);
  EXPECT_EQ(reply.status(), v1::PluginDeployReply::phase_done);
  EXPECT_EQ(reply.phase(), 1) << "unknown fields are ignored";

  ASSERT_TRUE(decode_reply("", 1024, "p", reply, fault)) << "an empty body reads as {}";
  EXPECT_EQ(reply.status(), v1::PluginDeployReply::status_unspecified);

  for (const std::string& garbage : std::vector<std::string>{
           "not json", "[1,2]", "\"running\"", R"({"status":7.5})", R"({"handle":{"x":1}})",
           R"({"status":"running")", std::string("{\"handle\":\"a\xff\"}"),
           std::string("{\"handle\":\"a\0b\"}", 15), R"({"error":"boom"})"}) {
    auto r = decode_reply(garbage, 1024, "remote provider ext: deploy.poll", reply, fault);
    ASSERT_FALSE(r) << garbage;
    EXPECT_EQ(fault, ReplyFault::malformed) << garbage;
    EXPECT_THAT(r.error().message, HasSubstr("remote provider ext: deploy.poll: malformed reply"));
  }
  auto big = decode_reply(std::string(2000, ' ') + "{}", 1024, "p", reply, fault);
  ASSERT_FALSE(big);
  EXPECT_THAT(big.error().message, HasSubstr("more than the 1024 accepted"));
}

TEST(RemoteMessagesTest, ErrorBodiesMapToOrgdsKindsAndRetry) {
  ReplyFault fault;
  v1::PluginHealthReply reply;
  const auto error_of = [&](const std::string& body) {
    auto r = decode_reply(body, 16384, "remote provider ext: health", reply, fault);
    EXPECT_FALSE(r);
    EXPECT_EQ(fault, ReplyFault::error_reply);
    return r.ok() ? Error{} : r.error();
  };
  Error e = error_of(R"({"error":{"code":"invalid_argument","message":"bad service"}})");
  EXPECT_EQ(e.code, ErrorCode::invalid_argument);
  EXPECT_EQ(e.retry, Retry::permanent);
  EXPECT_EQ(e.message, "remote provider ext: health: bad service (invalid_argument)");

  e = error_of(R"({"error":{"code":"not_found","message":"no such deploy"}})");
  EXPECT_EQ(e.code, ErrorCode::not_found);
  EXPECT_EQ(e.retry, Retry::permanent);

  e = error_of(R"({"error":{"code":"unavailable","message":"upstream down"}})");
  EXPECT_EQ(e.code, ErrorCode::unavailable);
  EXPECT_EQ(e.retry, Retry::retryable);

  e = error_of(R"({"error":{"code":"unavailable","message":"later","retryAfterMs":"2500"}})");
  EXPECT_EQ(e.retry, Retry::rate_limited);
  EXPECT_EQ(e.retry_after, std::chrono::milliseconds{2500});

  e = error_of(
      R"({"error":{"code":"rate_limited","message":"slow down","retryAfterMs":9999999999}})");
  EXPECT_EQ(e.retry, Retry::rate_limited);
  EXPECT_EQ(e.retry_after, std::chrono::hours{1}) << "clamped";

  e = error_of(R"({"error":{"code":"rate_limited"}})");
  EXPECT_EQ(e.retry_after, std::chrono::seconds{1});

  e = error_of(R"({"error":{"code":"teapot","message":"line1\nline2"}})");
  EXPECT_EQ(e.code, ErrorCode::internal);
  EXPECT_EQ(e.retry, Retry::retryable);
  EXPECT_THAT(e.message, Not(HasSubstr("\n"))) << "control characters are escaped";

  e = error_of(R"({"error":{"code":"internal","message":")" + std::string(5000, 'x') + "\"}}");
  EXPECT_LT(e.message.size(), 400u) << "a provider's message is cut short";
}

TEST(RemoteMessagesTest, Base64RoundTripsAndRejectsGarbage) {
  EXPECT_EQ(from_base64(to_base64("hello, world")), "hello, world");
  EXPECT_EQ(to_base64(""), "");
  EXPECT_FALSE(from_base64("not base64!"));
  EXPECT_FALSE(from_base64("aGVsbG8=x"));
}

// --- the provider against a scripted requester ---------------------------------------------

class RemoteProviderTest : public ::testing::Test {
 protected:
  // Replies by op; an op without one answers an error.
  std::map<std::string, std::function<Result<std::string>(const std::string&)>> replies;

  void SetUp() override {
    replies["describe"] = [this](const std::string&) -> Result<std::string> {
      return json{{"name", "scripted"},
                  {"version", "1.0"},
                  {"capabilities", capabilities},
                  {"publicKey", keys.public_base64()}}
          .dump();
    };
    replies["validate"] = [](const std::string&) -> Result<std::string> {
      return std::string{R"({"problems":[]})"};
    };
  }

  std::unique_ptr<Provider> make(const std::string& settings = "") {
    requester = std::make_shared<ScriptedRequester>(
        kSubject, [this](const std::string& op, const std::string& payload) -> Result<std::string> {
          auto it = replies.find(op);
          if (it == replies.end()) return unavailable("no responders on " + op);
          return it->second(payload);
        });
    config = load(
        "org: acme\n"
        "providers:\n  ext: {type: remote, timeout: 2s, capabilities: [deploy_target, "
        "secret_target, credential_issuer, health_probe]" +
        settings +
        "}\n"
        "repos:\n"
        "  api:\n"
        "    secrets: [DB]\n"
        "    deploy:\n      prod: {provider: ext, service: api, replicas: 2}\n"
        "    secret_targets:\n      - {provider: ext, store: vault-a}\n");
    ProviderEnvironment env;
    env.org = "acme";
    env.nats = requester;
    env.subject_prefix = "org.acme";
    auto provider = ProviderRegistry{}.create(config.providers.at("ext"), env, "orgd.yaml");
    remote = dynamic_cast<RemoteProvider*>(provider.get());
    return provider;
  }

  std::unique_ptr<DeployTarget> deploy_target(Provider& provider) {
    DeployTargetConfig target = config.repos.at("api").deploy.at("prod");
    return provider.make_deploy_target(target, "orgd.yaml");
  }
  std::unique_ptr<SecretTarget> secret_target(Provider& provider) {
    return provider.make_secret_target(config.repos.at("api").secret_targets.at(0), "orgd.yaml");
  }

  static DeployContext context(std::string handle = {}) {
    DeployContext c;
    c.repo = "api";
    c.env = "prod";
    c.ref = "abc123";
    c.deploy_id = "d-1";
    c.attempt = 2;
    c.handle = std::move(handle);
    c.deadline = std::chrono::steady_clock::now() + std::chrono::seconds{60};
    return c;
  }

  std::vector<std::string> capabilities{"deploy_target", "secret_target", "credential_issuer",
                                        "health_probe"};
  ProviderKeys keys;
  Config config;
  std::shared_ptr<ScriptedRequester> requester;
  RemoteProvider* remote = nullptr;
};

TEST_F(RemoteProviderTest, DeployOpsCarryTheContextAndMapTheReplies) {
  replies["deploy.start"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"status":"running","handle":"h-1","url":"https://x/1","detail":"queued",
                          "nextPollAfterMs":"1500"})"};
  };
  replies["deploy.poll"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"status":"phase_done","phase":1,"detail":"10% of traffic"})"};
  };
  replies["deploy.advance"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"status":"succeeded"})"};
  };
  auto provider = make();
  auto target = deploy_target(*provider);
  std::vector<std::string> logged;
  auto started = target->start(context(), [&](std::string_view l) { logged.emplace_back(l); });
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started.value().status, DeployStatus::running);
  EXPECT_EQ(started.value().handle, "h-1");
  EXPECT_EQ(started.value().url, "https://x/1");
  EXPECT_EQ(started.value().next_poll_after, std::chrono::milliseconds{1500});
  ASSERT_EQ(logged.size(), 1u);

  const auto sent = requester->sent("deploy.start");
  ASSERT_EQ(sent.size(), 1u);
  const auto request = json::parse(sent[0].payload);
  EXPECT_EQ(request["repo"], "api");
  EXPECT_EQ(request["env"], "prod");
  EXPECT_EQ(request["ref"], "abc123");
  EXPECT_EQ(request["deployId"], "d-1");
  EXPECT_EQ(request["attempt"], 2);
  EXPECT_EQ(request["settings"], json::parse(R"({"service":"api","replicas":2})"));
  EXPECT_LE(sent[0].timeout, std::chrono::seconds{2}) << "bounded by the provider's timeout";
  EXPECT_LE(std::stoll(request["timeoutMs"].get<std::string>()), 2000);

  auto polled = target->poll(context("h-1"));
  ASSERT_TRUE(polled);
  EXPECT_EQ(polled.value().status, DeployStatus::phase_done);
  EXPECT_EQ(polled.value().phase, 1);
  EXPECT_EQ(polled.value().handle, "h-1") << "a reply without a handle keeps the context's";
  auto ctx = context("h-1");
  ctx.phases_passed = 1;
  auto advanced = target->advance(ctx);
  ASSERT_TRUE(advanced);
  EXPECT_EQ(advanced.value().status, DeployStatus::succeeded);
  EXPECT_EQ(json::parse(requester->sent("deploy.advance")[0].payload)["phasesPassed"], 1);

  EXPECT_EQ(requester->sent("describe").size(), 1u) << "describe is cached";
  EXPECT_EQ(requester->sent("validate").size(), 1u) << "accepted settings are not asked again";
  const auto validate = json::parse(requester->sent("validate")[0].payload);
  EXPECT_EQ(validate["kind"], "deploy_target");
  EXPECT_EQ(validate["repo"], "api");
}

TEST_F(RemoteProviderTest, EveryCallIsBoundedByTheContextsDeadline) {
  replies["deploy.poll"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"status":"running"})"};
  };
  auto provider = make();
  auto target = deploy_target(*provider);
  auto ctx = context("h");
  ctx.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds{700};
  ASSERT_TRUE(target->poll(ctx));
  for (const auto& sent : requester->sent()) {
    EXPECT_LE(sent.timeout, std::chrono::milliseconds{700}) << sent.subject;
  }
  ctx.deadline = std::chrono::steady_clock::now() - std::chrono::milliseconds{1};
  const auto before = remote->client()->stats();
  auto late = target->poll(ctx);
  ASSERT_FALSE(late);
  EXPECT_THAT(late.error().message, HasSubstr("deadline passed"));
  EXPECT_EQ(remote->client()->stats().requests, before.requests) << "nothing sent";
  EXPECT_EQ(remote->client()->stats().unanswered, before.unanswered + 1);
}

TEST_F(RemoteProviderTest, HostileDeployRepliesAreClearErrorsAndCounted) {
  std::string answer;
  replies["deploy.start"] = [&](const std::string&) -> Result<std::string> { return answer; };
  auto provider = make();
  auto target = deploy_target(*provider);
  const auto error_for = [&](const std::string& body) {
    answer = body;
    auto r = target->start(context(), {});
    EXPECT_FALSE(r) << body;
    return r.ok() ? std::string{} : r.error().message;
  };
  EXPECT_THAT(error_for(R"({"handle":"h"})"), HasSubstr("malformed reply: no status"));
  EXPECT_THAT(error_for(R"({"status":"exploded","handle":"h"})"),
              HasSubstr("malformed reply: no status"))
      << "an unknown status name is no status";
  EXPECT_THAT(error_for(R"({"status":"running"})"), HasSubstr("no handle for the deploy"));
  EXPECT_THAT(error_for("<html>"), HasSubstr("malformed reply: not a JSON object"));
  EXPECT_THAT(error_for(R"({"status":"running","handle":")" + std::string(5000, 'h') + "\"}"),
              HasSubstr("a handle longer than"));
  EXPECT_EQ(remote->client()->stats().malformed, 5);
  EXPECT_THAT(remote->client()->last_error(), HasSubstr("handle longer"));

  answer = R"({"status":"failed"})";
  auto failed = target->start(context(), {});
  ASSERT_TRUE(failed) << "a failed start needs no handle";
  EXPECT_EQ(failed.value().status, DeployStatus::failed);
  EXPECT_FALSE(failed.value().error.empty());
}

TEST_F(RemoteProviderTest, RefusedSettingsFailTheTargetPermanentlyAndAreAskedAgain) {
  replies["validate"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"problems":[{"key":"replicas","message":"at most 1"}]})"};
  };
  auto provider = make();
  auto target = deploy_target(*provider);
  auto r = target->start(context(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().retry, Retry::permanent);
  EXPECT_THAT(r.error().message, HasSubstr("refuses the settings of deploy target api/prod: "
                                           "replicas: at most 1"));
  EXPECT_TRUE(requester->sent("deploy.start").empty());
  (void)target->start(context(), {});
  EXPECT_EQ(requester->sent("validate").size(), 2u);
}

TEST_F(RemoteProviderTest, ADescribeWithoutADeclaredCapabilityIsAPermanentErrorTheProbeReports) {
  capabilities = {"deploy_target", "health_probe"};
  auto provider = make();
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_FALSE(probe.value().ok);
  EXPECT_THAT(probe.value().detail,
              HasSubstr("declares capabilities the provider does not announce: secret_target, "
                        "credential_issuer"));
  auto target = deploy_target(*provider);
  auto r = target->start(context(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().retry, Retry::permanent);
  // Asked again (the provider may be upgraded meanwhile), never cached as good.
  EXPECT_EQ(requester->sent("describe").size(), 2u);
  EXPECT_EQ(remote->client()->stats().malformed, 2);
  EXPECT_EQ(remote->client()->stats().answered, 0);
}

TEST_F(RemoteProviderTest, ABadAnnouncedKeyIsRefused) {
  replies["describe"] = [this](const std::string&) -> Result<std::string> {
    return json{{"name", "x"}, {"capabilities", capabilities}, {"publicKey", "c2hvcnQ="}}.dump();
  };
  auto provider = make();
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_FALSE(probe.value().ok);
  EXPECT_THAT(probe.value().detail, HasSubstr("not standard base64 of a 32-byte X25519 key"));
}

TEST_F(RemoteProviderTest, SecretValuesAreSealedToTheAnnouncedKey) {
  const std::string canary = "canary-secret-" + std::to_string(::getpid());
  std::optional<std::string> opened;
  replies["secret.put"] = [&](const std::string& payload) -> Result<std::string> {
    const auto j = json::parse(payload);
    opened = keys.open(j["sealedValue"].get<std::string>());
    EXPECT_EQ(j["publicKey"], keys.public_base64());
    EXPECT_EQ(j["name"], "DB");
    EXPECT_EQ(j["target"]["repo"], "api");
    EXPECT_EQ(j["target"]["settings"], json::parse(R"({"store":"vault-a"})"));
    return std::string{"{}"};
  };
  replies["secret.list"] = [](const std::string&) -> Result<std::string> {
    return std::string{
        R"({"secrets":[{"name":"DB","updatedAt":"2026-01-02T03:04:05Z"},{"name":"OTHER"}]})"};
  };
  replies["secret.delete"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"error":{"code":"not_found","message":"no secret OTHER"}})"};
  };
  auto provider = make();
  auto target = secret_target(*provider);
  EXPECT_EQ(target->describe(), "remote ext (repo api)");
  ASSERT_TRUE(target->put("DB", Secret::from(canary)));
  EXPECT_EQ(opened, canary);
  for (const auto& sent : requester->sent()) {
    EXPECT_EQ(sent.payload.find(canary), std::string::npos) << sent.subject << " carries it clear";
  }
  auto listed = target->list();
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed.value().size(), 2u);
  EXPECT_EQ(listed.value()[0].name, "DB");
  ASSERT_TRUE(listed.value()[0].updated_at);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*listed.value()[0].updated_at), 1767323045);
  EXPECT_FALSE(listed.value()[1].updated_at);
  auto removed = target->remove("OTHER");
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, ErrorCode::not_found);
  EXPECT_EQ(json::parse(requester->sent("validate")[0].payload)["kind"], "secret_target");
}

TEST_F(RemoteProviderTest, AKeyConflictMakesOrgdDescribeAgain) {
  int puts = 0;
  replies["secret.put"] = [&](const std::string&) -> Result<std::string> {
    if (++puts == 1) return std::string{R"({"error":{"code":"conflict","message":"new key"}})"};
    return std::string{"{}"};
  };
  auto provider = make();
  auto target = secret_target(*provider);
  auto first = target->put("DB", Secret::from("v"));
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().retry, Retry::retryable);
  ASSERT_TRUE(target->put("DB", Secret::from("v")));
  EXPECT_EQ(requester->sent("describe").size(), 2u);
}

TEST_F(RemoteProviderTest, IssuedCredentialsComeBackSealedToOrgdsKey) {
  const std::string canary = "canary-creds-" + std::to_string(::getpid());
  std::string orgd_key;
  replies["issue"] = [&](const std::string& payload) -> Result<std::string> {
    const auto j = json::parse(payload);
    EXPECT_EQ(j["name"], "NATS_CREDS");
    orgd_key = j["orgdPublicKey"].get<std::string>();
    return json{{"id", "u-1"},
                {"sealedValue", testing::seal_to_base64_key(orgd_key, canary)},
                {"expiresAt", "2027-01-01T00:00:00Z"}}
        .dump();
  };
  replies["revoke"] = [](const std::string& payload) -> Result<std::string> {
    EXPECT_EQ(json::parse(payload)["id"], "u-1");
    return std::string{};
  };
  auto provider = make();
  ASSERT_NE(provider->credential_issuer(), nullptr);
  auto issued = provider->credential_issuer()->issue("NATS_CREDS");
  ASSERT_TRUE(issued) << issued.error().message;
  EXPECT_EQ(issued.value().id, "u-1");
  EXPECT_EQ(issued.value().value.expose(), canary);
  EXPECT_TRUE(issued.value().expires_at);
  EXPECT_EQ(orgd_key, remote->client()->orgd_public_key());
  EXPECT_EQ(json::parse(requester->sent("describe")[0].payload)["orgdPublicKey"], orgd_key);
  ASSERT_TRUE(provider->credential_issuer()->revoke("u-1"));

  // Sealed to some other key, or not sealed at all: refused, never taken as the value.
  replies["issue"] = [&](const std::string&) -> Result<std::string> {
    return json{{"id", "u-2"},
                {"sealedValue", testing::seal_to_base64_key(keys.public_base64(), canary)}}
        .dump();
  };
  auto wrong = provider->credential_issuer()->issue("NATS_CREDS");
  ASSERT_FALSE(wrong);
  EXPECT_THAT(wrong.error().message, HasSubstr("does not open with orgd's key"));
  replies["issue"] = [&](const std::string&) -> Result<std::string> {
    return json{{"id", "u-3"}, {"sealedValue", canary}}.dump();
  };
  auto clear = provider->credential_issuer()->issue("NATS_CREDS");
  ASSERT_FALSE(clear);
  EXPECT_THAT(clear.error().message, Not(HasSubstr(canary)));
}

TEST_F(RemoteProviderTest, TheProbeReportsHealthAndRateLimits) {
  replies["health"] = [](const std::string&) -> Result<std::string> {
    return std::string{R"({"ok":true,"detail":"token valid","rateLimitRemaining":"42",
                          "rateLimitLimit":100,"rateLimitReset":"2026-01-01T00:00:00Z"})"};
  };
  auto provider = make();
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_TRUE(probe.value().ok);
  EXPECT_EQ(probe.value().detail, "scripted 1.0: token valid");
  EXPECT_EQ(probe.value().rate_limit_remaining, 42);
  EXPECT_EQ(probe.value().rate_limit_limit, 100);
  EXPECT_TRUE(probe.value().rate_limit_reset);
}

TEST_F(RemoteProviderTest, NoRespondersIsUnavailable) {
  auto provider = make(", subject: nobody.here");
  auto probe = provider->health_probe()->probe();
  ASSERT_TRUE(probe);
  EXPECT_FALSE(probe.value().ok);
  EXPECT_THAT(probe.value().detail, HasSubstr("remote provider ext: describe: no responders"));
  EXPECT_EQ(remote->client()->stats().unanswered, 1);
}

}  // namespace
}  // namespace orgd::remote
