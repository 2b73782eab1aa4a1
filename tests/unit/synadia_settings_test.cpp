// The synadia provider's settings (defaults, every key checked with file:line:key, api_url's
// loopback rule, creds for the probe) and the pieces its client reads: a JWT's expiry, a creds
// file's parts, quotas from the account's shapes, user names and issued ids, error texts.
#include "plugins/synadia/synadia_settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "daemon/core/config.hpp"
#include "plugins/synadia/credential_issuer.hpp"
#include "plugins/synadia/synadia_api.hpp"

namespace orgd::synadia {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// providers.syn starts on line 3 of the file; its keys on line 5 on.
Config load(const std::string& block) {
  const std::string yaml = "org: acme\nproviders:\n  syn:\n    type: synadia\n" + block;
  return load_config_string(yaml, "orgd.yaml", Environment());
}

std::string base() { return "    token_env: SYN_TOKEN\n    system: prod\n    account: deployers\n"; }

Settings parse(const std::string& block) {
  return parse_settings(load(block).providers.at("syn"), "orgd.yaml");
}

std::string problems(const std::string& block) {
  try {
    (void)parse(block);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(SynadiaSettingsTest, Defaults) {
  const Settings s = parse(base());
  EXPECT_EQ(s.name, "syn");
  EXPECT_EQ(s.api_url, "https://cloud.synadia.com/api/core/beta");
  EXPECT_EQ(s.token_env, "SYN_TOKEN");
  EXPECT_EQ(s.system, "prod");
  EXPECT_EQ(s.account, "deployers");
  EXPECT_EQ(s.sk_group, "");
  EXPECT_EQ(s.user_name_prefix, "orgd");
  EXPECT_FALSE(s.jwt_expires_in);
  EXPECT_FALSE(s.create_account);
  EXPECT_EQ(s.nats_url, "");
}

TEST(SynadiaSettingsTest, EveryKeyRead) {
  const Settings s = parse(base() +
                           "    api_url: http://127.0.0.1:8080/api/core/beta/\n"
                           "    ca_file: /etc/ca.pem\n    sk_group: ci\n"
                           "    user_name_prefix: acme-orgd\n    jwt_expires_in: 7d\n"
                           "    create_account: true\n    nats_url: tls://connect.ngs.global\n"
                           "    creds_file: /run/secrets/probe.creds\n");
  EXPECT_EQ(s.api_url, "http://127.0.0.1:8080/api/core/beta");
  EXPECT_EQ(s.ca_file, "/etc/ca.pem");
  EXPECT_EQ(s.sk_group, "ci");
  EXPECT_EQ(s.user_name_prefix, "acme-orgd");
  ASSERT_TRUE(s.jwt_expires_in);
  EXPECT_EQ(*s.jwt_expires_in, std::chrono::hours{24 * 7});
  EXPECT_TRUE(s.create_account);
  EXPECT_EQ(s.nats_url, "tls://connect.ngs.global");
  EXPECT_EQ(s.creds_file, "/run/secrets/probe.creds");
}

TEST(SynadiaSettingsTest, RequiredKeysAreNamedWithFileAndLine) {
  const std::string missing = problems("    ca_file: x\n");
  EXPECT_THAT(missing, HasSubstr("providers.syn.token_env"));
  EXPECT_THAT(missing, HasSubstr("providers.syn.system"));
  EXPECT_THAT(missing, HasSubstr("providers.syn.account"));
  EXPECT_THAT(missing, HasSubstr("orgd.yaml:3"));
}

TEST(SynadiaSettingsTest, BadValuesAreRefusedWithTheirLine) {
  EXPECT_THAT(problems(base() + "    api_url: http://cloud.synadia.com/api/core/beta\n"),
              HasSubstr("orgd.yaml:8: providers.syn.api_url: http:// is accepted for loopback"));
  EXPECT_THAT(problems(base() + "    api_url: https://user:pw@cloud.synadia.com\n"),
              HasSubstr("must not carry credentials"));
  EXPECT_THAT(problems("    token_env: SYN-TOKEN\n    system: a\n    account: b\n"),
              HasSubstr("orgd.yaml:5: providers.syn.token_env: must be an environment variable"));
  EXPECT_THAT(problems(base() + "    user_name_prefix: 'a b'\n"),
              HasSubstr("providers.syn.user_name_prefix"));
  EXPECT_THAT(problems(base() + "    jwt_expires_in: 10s\n"),
              HasSubstr("providers.syn.jwt_expires_in: at least 1m"));
  EXPECT_THAT(problems(base() + "    nats_url: http://x\n"),
              HasSubstr("providers.syn.nats_url: must be a NATS URL"));
  EXPECT_THAT(problems(base() + "    nats_url: nats://x\n    creds_env: A\n    creds_file: /b\n"),
              HasSubstr("creds_env and creds_file are exclusive"));
  EXPECT_THAT(problems(base() + "    creds_env: A\n"),
              HasSubstr("providers.syn.creds_env: only used by the probe's connect"));
  EXPECT_THAT(problems(base() + "    create_account: maybe\n"),
              HasSubstr("providers.syn.create_account"));
  EXPECT_THAT(problems(base() + "    zone: x\n"), HasSubstr("providers.syn.zone"));
}

// A JWT-shaped string whose claims are `claims`.
std::string jwt_with(const std::string& claims) {
  auto b64 = [](const std::string& in) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    int val = 0, bits = -6;
    for (unsigned char c : in) {
      val = (val << 8) + c;
      bits += 8;
      while (bits >= 0) {
        out.push_back(a[(val >> bits) & 0x3F]);
        bits -= 6;
      }
    }
    if (bits > -6) out.push_back(a[((val << 8) >> (bits + 8)) & 0x3F]);
    return out;
  };
  return b64(R"({"typ":"JWT","alg":"ed25519-nkey"})") + "." + b64(claims) + ".c2ln";
}

TEST(SynadiaClientPieces, JwtExpiry) {
  const auto at = jwt_expiry(jwt_with(R"({"sub":"U","exp":1800000000})"));
  ASSERT_TRUE(at);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*at), 1800000000);
  EXPECT_FALSE(jwt_expiry(jwt_with(R"({"sub":"U"})")));
  EXPECT_FALSE(jwt_expiry("not-a-jwt"));
  EXPECT_FALSE(jwt_expiry("a.%%%.b"));
}

TEST(SynadiaClientPieces, CredsSplit) {
  const std::string creds =
      "-----BEGIN NATS USER JWT-----\neyJ.abc.def\n------END NATS USER JWT------\n\n"
      "*** IMPORTANT ***\n-----BEGIN USER NKEY SEED-----\nSUAXYZ\n------END USER NKEY SEED------\n";
  const CredsParts parts = split_creds(creds);
  EXPECT_EQ(parts.jwt, "eyJ.abc.def");
  EXPECT_EQ(parts.seed, "SUAXYZ");
  EXPECT_TRUE(split_creds("hello").jwt.empty());
}

TEST(SynadiaClientPieces, QuotasFromLimitsAndUsageInEitherShape) {
  const auto account = nlohmann::json::parse(
      R"({"jwt_settings":{"limits":{"mem_storage":-1,"disk_storage":1000,"streams":5,"conn":-1}}})");
  const auto info = nlohmann::json::parse(
      R"({"jetstream":{"stats":{"memory":10,"storage":200,"streams":2,"consumers":4}}})");
  const auto q = read_quotas(account, info);
  ASSERT_EQ(q.size(), 5u);
  EXPECT_EQ(q[0].name, "jetstream_memory_bytes");
  EXPECT_EQ(q[0].used, 10);
  EXPECT_FALSE(q[0].limit);
  EXPECT_EQ(q[1].used, 200);
  EXPECT_EQ(q[1].limit, 1000);
  EXPECT_EQ(q[2].limit, 5);
  EXPECT_EQ(q[3].name, "jetstream_consumers");
  EXPECT_FALSE(q[3].limit);
  EXPECT_EQ(q[4].name, "connections");
  EXPECT_FALSE(q[4].used);
  // The JetStream API's own shape (limits.max_*), flat.
  const auto flat = read_quotas(
      nlohmann::json::object(),
      nlohmann::json::parse(R"({"memory":1,"storage":2,"streams":3,"consumers":4,
        "limits":{"max_memory":100,"max_storage":200,"max_streams":-1,"max_consumers":40}})"));
  ASSERT_EQ(flat.size(), 4u);
  EXPECT_EQ(flat[1].limit, 200);
  EXPECT_FALSE(flat[2].limit);
  EXPECT_EQ(flat[3].limit, 40);
  // The metrics' gauges (floats), limits from the account claims' shape.
  const auto metrics = read_quotas(
      nlohmann::json::parse(R"({"jwt_settings":{"limits":{"disk_storage":4096,"streams":-1}}})"),
      nlohmann::json::parse(R"({"nats_core_account_jetstream_storage_used":1024.0,
        "nats_core_account_jetstream_stream_count":2,"nats_core_account_conn_count":3})"));
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(metrics[0].name, "jetstream_storage_bytes");
  EXPECT_EQ(metrics[0].used, 1024);
  EXPECT_EQ(metrics[0].limit, 4096);
  EXPECT_EQ(metrics[1].used, 2);
  EXPECT_FALSE(metrics[1].limit);
  EXPECT_EQ(metrics[2].name, "connections");
  EXPECT_EQ(metrics[2].used, 3);
  // Nothing known: nothing shown; hostile shapes tolerated.
  EXPECT_TRUE(read_quotas(nlohmann::json::parse(R"({"jwt_settings":[1]})"),
                          nlohmann::json::parse(R"({"jetstream":"x"})"))
                  .empty());
}

TEST(SynadiaClientPieces, UserNamesAndIssuedIds) {
  const auto t = std::chrono::system_clock::time_point{std::chrono::seconds{1'700'000'000}};
  EXPECT_EQ(SynadiaCredentialIssuer::user_name("orgd", "NATS_DEPLOYER_CREDS", t),
            "orgd-nats-deployer-creds-20231114T221320Z");
  EXPECT_EQ(SynadiaCredentialIssuer::user_name("p", "__", t), "p-secret-20231114T221320Z");
  const IssuedId id = IssuedId::parse("usr1:acc2:UABC");
  EXPECT_EQ(id.user_id, "usr1");
  EXPECT_EQ(id.account_id, "acc2");
  EXPECT_EQ(id.user_public_key, "UABC");
  EXPECT_EQ(id.text(), "usr1:acc2:UABC");
  EXPECT_EQ(IssuedId::parse("usr1").user_id, "usr1");
  EXPECT_TRUE(IssuedId::parse("usr1").user_public_key.empty());
}

TEST(SynadiaClientPieces, ErrorsCarryStatusAndTrimmedTextByRetryKind) {
  HttpResponse r{403, {}, "  forbidden:\n  missing scope \x1b[31m  "};
  Error e = status_error("creating user", r);
  EXPECT_EQ(e.message, "creating user: Synadia answered 403: forbidden: missing scope [31m");
  EXPECT_EQ(e.retry, Retry::permanent);
  EXPECT_EQ(status_error("x", {404, {}, ""}).code, ErrorCode::not_found);
  EXPECT_EQ(status_error("x", {404, {}, ""}).message, "x: Synadia answered 404");
  EXPECT_EQ(status_error("x", {409, {}, R"({"message":"exists"})"}).message,
            "x: Synadia answered 409: exists");
  EXPECT_EQ(status_error("x", {503, {}, ""}).retry, Retry::retryable);
  const Error limited = status_error("x", {429, {{"Retry-After", "7"}}, ""});
  EXPECT_EQ(limited.retry, Retry::rate_limited);
  EXPECT_EQ(limited.retry_after, std::chrono::seconds{7});
  EXPECT_EQ(status_error("x", {429, {}, ""}).retry_after, std::chrono::seconds{60});
  const std::string long_body(1000, 'a');
  EXPECT_LT(status_error("x", {400, {}, long_body}).message.size(), 340u);
}

}  // namespace
}  // namespace orgd::synadia
