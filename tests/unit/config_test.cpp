#include "daemon/core/config.hpp"
#include "daemon/deploy/inventory.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/core/errors.hpp"

namespace orgd {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

Config load(const std::string& yaml, const Environment& env = Environment{}) {
  return load_config_string(yaml, "test.yaml", env);
}

// The problems a config is rejected with (a test failure when it loads).
std::vector<std::string> problems(const std::string& yaml, const Environment& env = Environment{}) {
  try {
    load(yaml, env);
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), Not(IsEmpty()));
    return e.problems();
  }
  ADD_FAILURE() << "config loaded without errors:\n" << yaml;
  return {};
}

// The one problem of a config that has exactly one.
std::string problem(const std::string& yaml, const Environment& env = Environment{}) {
  auto all = problems(yaml, env);
  EXPECT_THAT(all, SizeIs(1));
  return all.empty() ? std::string{} : all.front();
}

constexpr const char* kFullConfig = R"(org: acme-corp
nats:
  embedded: false
  urls:
    - nats://n1:4222
    - tls://n2:4443
  data_dir: /var/lib/orgd
  server_binary: /usr/sbin/nats-server
  creds_file: /etc/orgd/orgd.creds
  nkey_file: /etc/orgd/orgd.nk
  token_env: NATS_TOKEN
  user: orgd
  password_env: NATS_PASSWORD
  jwt_env: MY_JWT
  nkey_seed_env: MY_SEED
  tls:
    ca_file: /etc/orgd/ca.pem
    cert_file: /etc/orgd/cert.pem
    key_file: /etc/orgd/key.pem
  subject_prefix: corp.acme
  replicas: 3
  connect_timeout: 2s
  reconnect_wait: 250ms
  max_payload: 1MiB
http:
  listen: "[::1]:9090"
  enabled: false
  body_limit: 65536
  read_timeout: 1m30s
log:
  level: debug
  format: json
providers:
  gh:
    type: github
    api_url: http://127.0.0.1:1234
    token_env: GH_TOKEN
  sh:
    type: exec
  local:
    type: local
repos:
  api:
    deploy:
      production:
        provider: sh
        command: task deploy
        timeout: 10m
      dev:
        provider: local
        duration: 2s
    secrets: [DATABASE_URL, API_KEY]
    health:
      services: [http, jobs]
      ttl: 45s
  web:
    depends_on: [api]
    deploy:
      production: {provider: gh, workflow: deploy.yml}
  worker:
    depends_on:
      - api
      - web
secrets:
  master_key_file: /etc/orgd/master.key
)";

TEST(Config, LoadsEveryField) {
  const Config c = load(kFullConfig);
  EXPECT_EQ(c.source, "test.yaml");
  EXPECT_EQ(c.org, "acme-corp");

  EXPECT_FALSE(c.nats.embedded);
  EXPECT_THAT(c.nats.urls, ElementsAre("nats://n1:4222", "tls://n2:4443"));
  EXPECT_EQ(c.nats.data_dir, "/var/lib/orgd");
  EXPECT_EQ(c.nats.server_binary, "/usr/sbin/nats-server");
  EXPECT_EQ(c.nats.creds_file, "/etc/orgd/orgd.creds");
  EXPECT_EQ(c.nats.nkey_file, "/etc/orgd/orgd.nk");
  EXPECT_EQ(c.nats.token, "");
  EXPECT_EQ(c.nats.token_env, "NATS_TOKEN");
  EXPECT_EQ(c.nats.user, "orgd");
  EXPECT_EQ(c.nats.password_env, "NATS_PASSWORD");
  EXPECT_EQ(c.nats.jwt_env, "MY_JWT");
  EXPECT_EQ(c.nats.nkey_seed_env, "MY_SEED");
  EXPECT_EQ(c.nats.tls.ca_file, "/etc/orgd/ca.pem");
  EXPECT_EQ(c.nats.tls.cert_file, "/etc/orgd/cert.pem");
  EXPECT_EQ(c.nats.tls.key_file, "/etc/orgd/key.pem");
  EXPECT_TRUE(c.nats.tls.enabled());
  EXPECT_EQ(c.nats.subject_prefix, "corp.acme");
  EXPECT_EQ(c.prefix(), "corp.acme");
  EXPECT_EQ(c.nats.replicas, 3);
  EXPECT_EQ(c.nats.connect_timeout, seconds{2});
  EXPECT_EQ(c.nats.reconnect_wait, milliseconds{250});
  EXPECT_EQ(c.nats.max_payload, 1024 * 1024);

  EXPECT_EQ(c.http.host, "::1");
  EXPECT_EQ(c.http.port, 9090);
  EXPECT_EQ(c.http.listen(), "[::1]:9090");
  EXPECT_FALSE(c.http.enabled);
  EXPECT_EQ(c.http.body_limit, 65536);
  EXPECT_EQ(c.http.read_timeout, seconds{90});

  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.format, "json");

  ASSERT_EQ(c.providers.size(), 3u);
  const ProviderConfig& gh = c.providers.at("gh");
  EXPECT_EQ(gh.name, "gh");
  EXPECT_EQ(gh.type, "github");
  EXPECT_EQ(gh.line, 34);
  ASSERT_TRUE(gh.settings.IsMap());
  // The map as written; the provider's reader skips `type`.
  EXPECT_EQ(gh.settings.size(), 3u);
  EXPECT_EQ(gh.settings["api_url"].as<std::string>(), "http://127.0.0.1:1234");
  EXPECT_EQ(gh.settings["token_env"].as<std::string>(), "GH_TOKEN");
  // Settings keep their positions for the provider's own messages.
  EXPECT_EQ(gh.settings["api_url"].Mark().line + 1, 36);
  EXPECT_EQ(c.providers.at("sh").type, "exec");
  EXPECT_TRUE(c.providers.at("sh").settings.IsMap());
  EXPECT_EQ(c.providers.at("sh").settings.size(), 1u);
  EXPECT_EQ(c.providers.at("local").type, "local");

  ASSERT_EQ(c.repos.size(), 3u);
  const RepoConfig& api = c.repos.at("api");
  EXPECT_EQ(api.name, "api");
  EXPECT_EQ(api.line, 43);
  EXPECT_THAT(api.depends_on, IsEmpty());
  ASSERT_EQ(api.deploy.size(), 2u);
  const DeployTargetConfig& prod = api.deploy.at("production");
  EXPECT_EQ(prod.env, "production");
  EXPECT_EQ(prod.provider, "sh");
  EXPECT_EQ(prod.line, 45);
  EXPECT_EQ(prod.settings["provider"].as<std::string>(), "sh");
  EXPECT_EQ(prod.settings["command"].as<std::string>(), "task deploy");
  EXPECT_EQ(prod.settings["timeout"].as<std::string>(), "10m");
  EXPECT_EQ(api.deploy.at("dev").provider, "local");
  EXPECT_EQ(api.deploy.at("dev").settings["duration"].as<std::string>(), "2s");
  EXPECT_THAT(api.secrets, ElementsAre("DATABASE_URL", "API_KEY"));
  EXPECT_THAT(api.health.services, ElementsAre("http", "jobs"));
  EXPECT_EQ(api.health.ttl, seconds{45});

  EXPECT_THAT(c.repos.at("web").depends_on, ElementsAre("api"));
  EXPECT_EQ(c.repos.at("web").deploy.at("production").settings["workflow"].as<std::string>(),
            "deploy.yml");
  EXPECT_EQ(c.repos.at("web").health.ttl, seconds{30});  // default
  EXPECT_THAT(c.repos.at("worker").depends_on, ElementsAre("api", "web"));
  EXPECT_THAT(c.repos.at("worker").deploy, IsEmpty());

  EXPECT_EQ(c.secrets.master_key_file, "/etc/orgd/master.key");
  EXPECT_EQ(c.secrets.master_key_env, "");
}

TEST(Config, HttpTimeouts) {
  const Config c = load("http:\n  header_timeout: 2s\n  read_timeout: 30s\n  write_timeout: 20s\n");
  EXPECT_EQ(c.http.header_timeout, seconds{2});
  EXPECT_EQ(c.http.read_timeout, seconds{30});
  EXPECT_EQ(c.http.write_timeout, seconds{20});
  const Config defaults = load("org: demo\n");
  EXPECT_EQ(defaults.http.header_timeout, seconds{5});
  EXPECT_EQ(defaults.http.read_timeout, seconds{10});
  EXPECT_EQ(defaults.http.write_timeout, seconds{10});
}

TEST(Config, DefaultsWhenSectionsAreMissing) {
  const Config c = load("org: solo\n");
  const Config defaults;
  EXPECT_EQ(c.org, "solo");
  EXPECT_EQ(c.prefix(), "org.solo");
  EXPECT_EQ(c.nats.embedded, defaults.nats.embedded);
  EXPECT_EQ(c.nats.urls, defaults.nats.urls);
  EXPECT_EQ(c.nats.data_dir, ".orgd");
  EXPECT_EQ(c.nats.replicas, 1);
  EXPECT_EQ(c.nats.max_payload, defaults.nats.max_payload);
  EXPECT_EQ(c.http.host, "127.0.0.1");
  EXPECT_EQ(c.http.port, 8080);
  EXPECT_TRUE(c.http.enabled);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, "text");
  EXPECT_THAT(c.providers, IsEmpty());
  EXPECT_THAT(c.repos, IsEmpty());
}

TEST(Config, EmptySectionsAreAllowed) {
  const Config c = load("org: solo\nnats:\nproviders:\nrepos:\n  api:\nsecrets: {}\n");
  EXPECT_EQ(c.repos.size(), 1u);
  EXPECT_THAT(c.repos.at("api").deploy, IsEmpty());
}

TEST(Config, UrlsAsCommaSeparatedString) {
  const Config c = load("nats:\n  urls: nats://a:4222, nats://b:4222 ,nats://c:4222\n");
  EXPECT_THAT(c.nats.urls, ElementsAre("nats://a:4222", "nats://b:4222", "nats://c:4222"));
}

TEST(Config, ScalarForms) {
  const Config c = load(
      "nats:\n  embedded: yes\n  max_payload: 2048\n  replicas: \"2\"\n"
      "http:\n  listen: 0.0.0.0:0\n  body_limit: 512KiB\n");
  EXPECT_TRUE(c.nats.embedded);
  EXPECT_EQ(c.nats.max_payload, 2048);
  EXPECT_EQ(c.nats.replicas, 2);
  EXPECT_EQ(c.http.host, "0.0.0.0");
  EXPECT_EQ(c.http.port, 0);
  EXPECT_EQ(c.http.body_limit, 512 * 1024);
  EXPECT_EQ(c.http.listen(), "0.0.0.0:0");
}

TEST(Config, ListenAddresses) {
  EXPECT_EQ(load("http: {listen: 'localhost:80'}").http.host, "localhost");
  EXPECT_EQ(load("http: {listen: '[::]:65535'}").http.port, 65535);
  EXPECT_EQ(load("http: {listen: '[fe80::1%eth0]:8080'}").http.host, "fe80::1%eth0");
  for (const char* bad : {"8080", ":8080", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "127.0.0.1:80x", "::1:8080", "[::1]8080", "[::1", "[]:80", "host name:80",
                          "127.0.0.1:123456", "[zz::1]:80"}) {
    EXPECT_THAT(problem(std::string{"http:\n  listen: '"} + bad + "'\n"),
                AllOf(HasSubstr("test.yaml:2: http.listen: invalid listen address")))
        << bad;
  }
}

// --- Unknown keys, at every level -----------------------------------------------------------

TEST(Config, UnknownTopLevelKey) {
  EXPECT_EQ(problem("org: demo\nnatz: {}\n"),
            "test.yaml:2: natz: unknown key (expected one of: org, nats, http, log, providers, "
            "repos, secrets, deploy)");
}

TEST(Config, UnknownNestedKeys) {
  EXPECT_EQ(problem("nats:\n  tls:\n    ca_fil: x\n"),
            "test.yaml:3: nats.tls.ca_fil: unknown key (expected one of: ca_file, cert_file, "
            "key_file)");
  EXPECT_THAT(problem("nats:\n  embeded: true\n"),
              HasSubstr("test.yaml:2: nats.embeded: unknown key (expected one of: embedded,"));
  EXPECT_THAT(problem("http:\n  port: 80\n"), HasSubstr("test.yaml:2: http.port: unknown key"));
  EXPECT_THAT(problem("log:\n  lvl: info\n"), HasSubstr("test.yaml:2: log.lvl: unknown key"));
  EXPECT_THAT(problem("secrets:\n  key: x\n"), HasSubstr("test.yaml:2: secrets.key: unknown key"));
  EXPECT_THAT(problem("repos:\n  api:\n    dependson: []\n"),
              HasSubstr("test.yaml:3: repos.api.dependson: unknown key (expected one of: "
                        "depends_on, deploy, secrets, secret_targets, health)"));
  EXPECT_THAT(problem("repos:\n  api:\n    health:\n      service: [http]\n"),
              HasSubstr("test.yaml:4: repos.api.health.service: unknown key"));
}

// --- deploy: and per-target step settings -------------------------------------------------

TEST(Config, DeploySettingsAndTargetOverrides) {
  const Config c = load(
      "deploy:\n"
      "  parallel: 8\n  max_active: 3\n  on_failure: rollback\n  lease_ttl: 5s\n"
      "  step_timeout: 10m\n  retries: 2\n  retry_backoff: 1s\n"
      "  health_gate: {timeout: 2m, soak: 0s}\n"
      "providers:\n  local: {type: local}\n"
      "repos:\n  api:\n    deploy:\n"
      "      dev: {provider: local, duration: 1s, retries: 0, health_gate: false}\n"
      "      prod: {provider: local, step_timeout: 1h, health_gate: {soak: 30s}}\n");
  EXPECT_EQ(c.deploy.parallel, 8);
  EXPECT_EQ(c.deploy.max_active, 3);
  EXPECT_EQ(c.deploy.on_failure, "rollback");
  EXPECT_EQ(c.deploy.lease_ttl, seconds(5));
  EXPECT_EQ(c.deploy.step.step_timeout, minutes(10));
  EXPECT_EQ(c.deploy.step.retries, 2);
  EXPECT_EQ(c.deploy.step.retry_backoff, seconds(1));
  EXPECT_TRUE(c.deploy.step.health_gate.enabled);
  EXPECT_EQ(c.deploy.step.health_gate.timeout, minutes(2));
  EXPECT_EQ(c.deploy.step.health_gate.soak, seconds(0));

  const auto& dev = c.repos.at("api").deploy.at("dev");
  const StepPolicy dev_policy = dev.policy.apply(c.deploy.step);
  EXPECT_EQ(dev_policy.retries, 0);
  EXPECT_FALSE(dev_policy.health_gate.enabled);
  EXPECT_EQ(dev_policy.step_timeout, minutes(10));
  // The orchestrator's keys are reserved: the local provider sees only `duration` as its own.
  ASSERT_TRUE(dev.settings.IsMap());
  EXPECT_TRUE(dev.settings["duration"]);
  EXPECT_NO_THROW(deploy::Inventory::build(c, ProviderRegistry{}, ProviderEnvironment{"/tmp"}));

  const StepPolicy prod =
      c.repos.at("api").deploy.at("prod").policy.apply(c.deploy.step);
  EXPECT_EQ(prod.step_timeout, std::chrono::hours(1));
  EXPECT_EQ(prod.health_gate.soak, seconds(30));
  EXPECT_EQ(prod.health_gate.timeout, minutes(2));
  EXPECT_EQ(prod.retries, 2);
}

// A map is a gate being configured: it turns the gate on, also where deploy: turned it off,
// unless the map itself says `enabled: false`.
TEST(Config, HealthGateMapTurnsTheGateOn) {
  const Config c = load(
      "deploy:\n  health_gate: false\n"
      "providers:\n  local: {type: local}\n"
      "repos:\n  api:\n    deploy:\n"
      "      dev: {provider: local, health_gate: {soak: 5s}}\n"
      "      qa: {provider: local, health_gate: {soak: 5s, enabled: false}}\n"
      "      prod: {provider: local, health_gate: {}}\n"
      "      staging: {provider: local}\n");
  EXPECT_FALSE(c.deploy.step.health_gate.enabled);
  const auto policy = [&](const char* env) {
    return c.repos.at("api").deploy.at(env).policy.apply(c.deploy.step);
  };
  EXPECT_TRUE(policy("dev").health_gate.enabled);
  EXPECT_EQ(policy("dev").health_gate.soak, seconds(5));
  EXPECT_FALSE(policy("qa").health_gate.enabled);
  EXPECT_TRUE(policy("prod").health_gate.enabled);
  EXPECT_FALSE(policy("staging").health_gate.enabled);  // deploy:'s setting
}

TEST(Config, DeployDefaults) {
  const Config c = load("org: demo\n");
  EXPECT_EQ(c.deploy.parallel, 4);
  EXPECT_EQ(c.deploy.on_failure, "stop");
  EXPECT_EQ(c.deploy.lease_ttl, seconds(15));
  EXPECT_EQ(c.deploy.step.retries, 0);
  EXPECT_TRUE(c.deploy.step.health_gate.enabled);
}

TEST(Config, BadDeploySettings) {
  EXPECT_THAT(problem("deploy:\n  paralel: 2\n"),
              HasSubstr("test.yaml:2: deploy.paralel: unknown key"));
  EXPECT_THAT(problem("deploy:\n  parallel: 0\n"),
              HasSubstr("test.yaml:2: deploy.parallel: must be between 1 and 64"));
  EXPECT_THAT(problem("deploy:\n  on_failure: pray\n"),
              HasSubstr("test.yaml:2: deploy.on_failure: invalid value"));
  EXPECT_THAT(problem("deploy:\n  lease_ttl: 100ms\n"),
              HasSubstr("test.yaml:2: deploy.lease_ttl: must be at least 1s"));
  EXPECT_THAT(problem("deploy:\n  retries: 11\n"),
              HasSubstr("test.yaml:2: deploy.retries: must be between 0 and 10"));
  EXPECT_THAT(problem("deploy:\n  health_gate: {soke: 1s}\n"),
              HasSubstr("test.yaml:2: deploy.health_gate.soke: unknown key"));
  EXPECT_THAT(problem("deploy:\n  health_gate: maybe\n"),
              HasSubstr("deploy.health_gate: expected true or false"));
  EXPECT_THAT(problem("providers:\n  local: {type: local}\n"
                      "repos:\n  api:\n    deploy:\n"
                      "      dev: {provider: local, step_timeout: soon}\n"),
              HasSubstr("test.yaml:6: repos.api.deploy.dev.step_timeout: invalid duration"));
}

TEST(Config, DuplicateKey) {
  EXPECT_THAT(problem("org: a\norg: b\n"),
              HasSubstr("test.yaml:2: org: duplicate key (first at line 1)"));
}

// --- Wrong types ----------------------------------------------------------------------------

TEST(Config, WrongTypes) {
  EXPECT_EQ(problem("org: [a, b]\n"), "test.yaml:1: org: expected a string, got a list");
  EXPECT_EQ(problem("nats: [a]\n"), "test.yaml:1: nats: expected a map, got a list");
  EXPECT_THAT(problem("nats:\n  embedded: maybe\n"),
              HasSubstr("test.yaml:2: nats.embedded: expected true or false"));
  EXPECT_THAT(problem("nats:\n  replicas: three\n"),
              HasSubstr("test.yaml:2: nats.replicas: expected an integer"));
  EXPECT_THAT(problem("nats:\n  replicas: 7\n"),
              HasSubstr("test.yaml:2: nats.replicas: must be between 1 and 5"));
  EXPECT_THAT(problem("nats:\n  replicas: 0\n"),
              HasSubstr("nats.replicas: must be between 1 and 5"));
  EXPECT_THAT(problem("nats:\n  urls: {a: b}\n"),
              HasSubstr("test.yaml:2: nats.urls: expected a list"));
  EXPECT_THAT(problem("nats:\n  urls: [nats://a:4222, [x]]\n"),
              HasSubstr("test.yaml:2: nats.urls: expected a list of strings"));
  EXPECT_THAT(problem("nats:\n  tls: yes\n"), HasSubstr("test.yaml:2: nats.tls: expected a map"));
  EXPECT_THAT(problem("nats:\n  max_payload: 512\n"),
              HasSubstr("test.yaml:2: nats.max_payload: must be between 1 KiB and 8 MiB"));
  EXPECT_THAT(problem("nats:\n  max_payload: 9MiB\n"),
              HasSubstr("nats.max_payload: must be between 1 KiB and 8 MiB"));
  EXPECT_THAT(problem("nats:\n  max_payload: lots\n"),
              HasSubstr("test.yaml:2: nats.max_payload: expected a size in bytes"));
  EXPECT_THAT(problem("nats:\n  data_dir: ''\n"), HasSubstr("nats.data_dir: must not be empty"));
  EXPECT_THAT(problem("nats:\n  creds_file:\n"),
              HasSubstr("test.yaml:2: nats.creds_file: expected a string, got nothing (null)"));
  EXPECT_THAT(problem("http:\n  enabled: 1\n"), HasSubstr("http.enabled: expected true or false"));
  EXPECT_THAT(
      problem("log:\n  level: verbose\n"),
      HasSubstr("test.yaml:2: log.level: invalid value \"verbose\" (expected one of: trace, "
                "debug, info, warn, error, critical, off)"));
  EXPECT_THAT(
      problem("log:\n  format: xml\n"),
      HasSubstr("test.yaml:2: log.format: invalid value \"xml\" (expected one of: text, json)"));
  EXPECT_THAT(problem("providers: [a]\n"), HasSubstr("test.yaml:1: providers: expected a map"));
  EXPECT_THAT(problem("repos:\n  api: [x]\n"), HasSubstr("test.yaml:2: repos.api: expected a map"));
  EXPECT_THAT(problem("repos:\n  api:\n    depends_on: web\n"),
              HasSubstr("test.yaml:3: repos.api.depends_on: expected a list of strings"));
  EXPECT_THAT(problem("repos:\n  api:\n    secrets: {a: b}\n"),
              HasSubstr("test.yaml:3: repos.api.secrets: expected a list of strings"));
  EXPECT_THAT(problem("repos:\n  api:\n    deploy: [dev]\n"),
              HasSubstr("test.yaml:3: repos.api.deploy: expected a map"));
  EXPECT_THAT(problems("1: 2\n3: [4]\n"), Contains(HasSubstr("test.yaml:2: 3: unknown key")));
  EXPECT_THAT(problem("? [a]\n: b\n"), HasSubstr("test.yaml:1: map keys must be strings"));
}

TEST(Config, TopLevelMustBeAMap) {
  EXPECT_EQ(problem("- a\n- b\n"), "test.yaml:1: expected a map, got a list");
  EXPECT_EQ(problem("just text\n"), "test.yaml:1: expected a map, got a scalar");
}

TEST(Config, BadDurations) {
  EXPECT_EQ(problem("nats:\n  connect_timeout: 5\n"),
            "test.yaml:2: nats.connect_timeout: invalid duration \"5\" (expected e.g. 500ms, 30s, "
            "5m, 2h, 1m30s)");
  EXPECT_THAT(problem("nats:\n  reconnect_wait: soon\n"),
              HasSubstr("test.yaml:2: nats.reconnect_wait: invalid duration \"soon\""));
  EXPECT_THAT(problem("http:\n  read_timeout: 0s\n"),
              HasSubstr("test.yaml:2: http.read_timeout: must be longer than zero"));
  EXPECT_THAT(problem("http:\n  header_timeout: 0s\n"),
              HasSubstr("test.yaml:2: http.header_timeout: must be longer than zero"));
  EXPECT_THAT(problem("http:\n  write_timeout: soon\n"),
              HasSubstr("test.yaml:2: http.write_timeout: invalid duration \"soon\""));
  EXPECT_THAT(problem("repos:\n  api:\n    health:\n      ttl: -5s\n"),
              HasSubstr("test.yaml:4: repos.api.health.ttl: invalid duration \"-5s\""));
  EXPECT_THAT(problem("repos:\n  api:\n    health:\n      ttl: 99999999999999999999h\n"),
              HasSubstr("repos.api.health.ttl: invalid duration"));
  EXPECT_EQ(load("nats:\n  reconnect_wait: 0s\n").nats.reconnect_wait, milliseconds{0});
}

// --- Names ----------------------------------------------------------------------------------

TEST(Config, BadOrg) {
  for (const char* bad : {"Acme", "acme.corp", "acme corp", "acme*", "-acme", "ac>me", "''"}) {
    EXPECT_THAT(problem(std::string{"org: "} + bad + "\n"),
                HasSubstr("test.yaml:1: org: invalid org"))
        << bad;
  }
  EXPECT_EQ(load("org: 0rg-9\n").org, "0rg-9");
}

TEST(Config, BadSubjectPrefix) {
  for (const char* bad : {"org.*", "org.>", "org..x", ".org", "org.", "a b", "", "a\\tb"}) {
    EXPECT_THAT(problem(std::string{"nats:\n  subject_prefix: \""} + bad + "\"\n"),
                HasSubstr("test.yaml:2: nats.subject_prefix: invalid subject prefix"))
        << bad;
  }
}

TEST(Config, BadNames) {
  EXPECT_THAT(problem("repos:\n  my.repo: {}\n"),
              HasSubstr("test.yaml:2: repos.my.repo: invalid repo name"));
  EXPECT_THAT(problem("repos:\n  'a b': {}\n"),
              HasSubstr("test.yaml:2: repos.a b: invalid repo name"));
  EXPECT_THAT(problem("providers:\n  'gh*':\n    type: github\n"),
              HasSubstr("test.yaml:2: providers.gh*: invalid provider name"));
  EXPECT_THAT(problem("providers:\n  local: {type: local}\n"
                      "repos:\n  api:\n    deploy:\n      prod.eu: {provider: local}\n"),
              HasSubstr("test.yaml:6: repos.api.deploy.prod.eu: invalid environment name"));
  EXPECT_THAT(problem("repos:\n  api:\n    health:\n      services: [http, 'a.b']\n"),
              HasSubstr("test.yaml:4: repos.api.health.services: invalid service name \"a.b\""));
  EXPECT_THAT(problem("repos:\n  api:\n    secrets: [DB_URL, 'x>']\n"),
              HasSubstr("test.yaml:3: repos.api.secrets: invalid secret name \"x>\""));
}

// --- Providers and repos --------------------------------------------------------------------

TEST(Config, ProviderType) {
  EXPECT_EQ(problem("providers:\n  gh:\n    api_url: x\n"),
            "test.yaml:2: providers.gh.type: required key missing (one of: github, cloudflare, "
            "synadia, exec, local, remote)");
  EXPECT_THAT(problem("providers:\n  gh:\n    type: gitlab\n"),
              HasSubstr("test.yaml:3: providers.gh.type: invalid value \"gitlab\""));
  EXPECT_THAT(problem("providers:\n  gh:\n"),
              HasSubstr("test.yaml:2: providers.gh: expected a map"));
}

TEST(Config, UnknownProvider) {
  EXPECT_EQ(problem("providers:\n  local: {type: local}\n"
                    "repos:\n  api:\n    deploy:\n      dev:\n        provider: locl\n"),
            "test.yaml:7: repos.api.deploy.dev.provider: unknown provider \"locl\" (declare it "
            "under providers:)");
  EXPECT_THAT(problem("repos:\n  api:\n    deploy:\n      dev: {duration: 2s}\n"),
              HasSubstr("test.yaml:4: repos.api.deploy.dev.provider: required key missing"));
}

TEST(Config, ProvidersDeclaredAfterReposStillResolve) {
  const Config c =
      load("repos:\n  api:\n    deploy: {dev: {provider: l}}\nproviders:\n  l: {type: local}\n");
  EXPECT_EQ(c.repos.at("api").deploy.at("dev").provider, "l");
}

TEST(Config, UnknownDependency) {
  EXPECT_EQ(problem("repos:\n  api: {}\n  web:\n    depends_on: [api, apii]\n"),
            "test.yaml:4: repos.web.depends_on: unknown repo \"apii\"");
}

TEST(Config, SelfDependency) {
  EXPECT_EQ(problem("repos:\n  api:\n    depends_on:\n      - api\n"),
            "test.yaml:4: repos.api.depends_on: a repo cannot depend on itself");
}

// --- Collecting problems --------------------------------------------------------------------

TEST(Config, CollectsEveryProblem) {
  const auto all = problems(R"(org: Bad.Org
nats:
  replicas: 9
  tls:
    ca_fil: x
http:
  listen: nowhere
log:
  level: loud
repos:
  api:
    depends_on: [ghost]
    health:
      ttl: forever
)");
  EXPECT_THAT(all, SizeIs(7));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:1: org:")));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:3: nats.replicas:")));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:5: nats.tls.ca_fil: unknown key")));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:7: http.listen:")));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:9: log.level:")));
  EXPECT_THAT(all,
              Contains(HasSubstr("test.yaml:12: repos.api.depends_on: unknown repo \"ghost\"")));
  EXPECT_THAT(all, Contains(HasSubstr("test.yaml:14: repos.api.health.ttl: invalid duration")));

  try {
    load("org: Bad.Org\nlog: {level: loud}\n");
    FAIL() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(std::string{e.what()}, HasSubstr("test.yaml:1: org:"));
    EXPECT_THAT(std::string{e.what()}, HasSubstr("\ntest.yaml:2: log.level:"));
  }
}

constexpr const char* kSecretsConfig = R"(providers:
  gh: {type: github, owner: acme, token_env: GH_TOKEN}
  synadia: {type: synadia}
repos:
  api:
    secrets: [DATABASE_URL, SESSION_KEY]
    secret_targets:
      - {provider: gh}
      - {provider: gh, environment: production, names: [SESSION_KEY]}
secrets:
  passphrase_env: ORGD_PASSPHRASE
  sources:
    - {file: /srv/acme/.github/.env, scope: org}
    - {file: /srv/acme/api/.env, scope: api}
  org_targets:
    - {provider: gh, names: [NPM_TOKEN], visibility: private, prune: true}
  sync_interval: 5m
  rotation:
    SESSION_KEY: {max_age: 30d, generate: {length: 48, alphabet: hex}, overlap: 2h}
    NATS_DEPLOYER_CREDS: {max_age: 7d, issuer: synadia}
  backup: {dir: /var/lib/orgd/backups, interval: 12h, keep: 3}
)";

TEST(SecretsConfig, EveryKeyOfDesignSection9Loads) {
  const Config c = load(kSecretsConfig);
  const SecretsConfig& s = c.secrets;
  EXPECT_EQ(s.passphrase_env, "ORGD_PASSPHRASE");
  EXPECT_TRUE(s.has_master_key());
  ASSERT_THAT(s.sources, SizeIs(2));
  EXPECT_EQ(s.sources[0].file, "/srv/acme/.github/.env");
  EXPECT_EQ(s.sources[0].scope, "org");
  EXPECT_EQ(s.sources[1].scope, "api");
  EXPECT_EQ(s.sources[1].line, 14);
  ASSERT_THAT(s.org_targets, SizeIs(1));
  EXPECT_TRUE(s.org_targets[0].organization);
  EXPECT_TRUE(s.org_targets[0].prune);
  EXPECT_EQ(s.org_targets[0].provider, "gh");
  EXPECT_THAT(s.org_targets[0].names, ElementsAre("NPM_TOKEN"));
  EXPECT_EQ(s.sync_interval, minutes{5});
  ASSERT_EQ(s.rotation.count("SESSION_KEY"), 1u);
  const RotationPolicyConfig& session = s.rotation.at("SESSION_KEY");
  EXPECT_EQ(session.max_age, std::chrono::hours{24 * 30});
  EXPECT_EQ(session.length, 48);
  EXPECT_EQ(session.alphabet, "hex");
  EXPECT_EQ(session.overlap, std::chrono::hours{2});
  EXPECT_EQ(session.issuer, "");
  const RotationPolicyConfig& creds = s.rotation.at("NATS_DEPLOYER_CREDS");
  EXPECT_EQ(creds.issuer, "synadia");
  EXPECT_EQ(creds.overlap, std::chrono::hours{1});  // the default
  EXPECT_EQ(s.backup.dir, "/var/lib/orgd/backups");
  EXPECT_EQ(s.backup.interval, std::chrono::hours{12});
  EXPECT_EQ(s.backup.keep, 3);
  const RepoConfig& api = c.repos.at("api");
  ASSERT_THAT(api.secret_targets, SizeIs(2));
  EXPECT_THAT(api.secret_targets[0].names, IsEmpty());
  EXPECT_THAT(api.secret_targets[1].names, ElementsAre("SESSION_KEY"));
  EXPECT_FALSE(api.secret_targets[1].organization);
}

TEST(SecretsConfig, DefaultsWithoutASection) {
  const Config c = load("org: demo\n");
  EXPECT_FALSE(c.secrets.has_master_key());
  EXPECT_EQ(c.secrets.sync_interval, minutes{10});
  EXPECT_THAT(c.secrets.rotation, IsEmpty());
  EXPECT_EQ(c.secrets.backup.dir, "");
}

TEST(SecretsConfig, MistakesNameTheirLine) {
  const std::string head = "providers:\n  gh: {type: github, owner: acme}\nrepos:\n  api: {}\n";
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  sources:\n    - {file: a.env, "
                             "scope: nope}\n"),
              HasSubstr("test.yaml:8: secrets.sources[0].scope: unknown repo \"nope\""));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  sources:\n    - {scope: org}\n"),
              HasSubstr("test.yaml:8: secrets.sources[0].file: required key missing"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  org_targets:\n    - {provider: "
                             "gh}\n"),
              HasSubstr("secrets.org_targets[0].names: required key missing"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  org_targets:\n    - {provider: "
                             "nope, names: [A]}\n"),
              HasSubstr("secrets.org_targets[0].provider: unknown provider \"nope\""));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  rotation:\n    A: {max_age: "
                             "1d}\n"),
              HasSubstr("test.yaml:8: secrets.rotation.A: set exactly one of generate"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  rotation:\n    A: {issuer: gh, "
                             "generate: {}}\n"),
              HasSubstr("secrets.rotation.A: set exactly one of generate"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  rotation:\n    A: {generate: "
                             "{length: 8}}\n"),
              HasSubstr("secrets.rotation.A.generate.length"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  rotation:\n    A: {generate: "
                             "{alphabet: abc}}\n"),
              HasSubstr("at least 16 distinct characters"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  backup: {dir: /b, keep: 0}\n"),
              HasSubstr("secrets.backup.keep"));
  EXPECT_THAT(problem(head + "secrets:\n  master_key_env: K\n  bogus: 1\n"),
              HasSubstr("secrets.bogus"));
  EXPECT_THAT(problem(head + "secrets:\n  sources:\n    - {file: a.env, scope: org}\n"),
              HasSubstr("secrets: the vault needs a master key"));
  EXPECT_THAT(problem("repos:\n  api:\n    secrets: [A]\n    secret_targets:\n      - {provider: "
                      "gh, names: [B]}\nproviders:\n  gh: {type: github, owner: acme}\n"),
              HasSubstr("\"B\" is not one of repos.api.secrets"));
}

TEST(Config, CombinationsThatDoNotWork) {
  EXPECT_THAT(problem("nats:\n  tls:\n    cert_file: c.pem\n"),
              HasSubstr("test.yaml:2: nats.tls: cert_file and key_file go together"));
  EXPECT_THAT(problem("nats:\n  token: t\n  token_env: T\n"),
              HasSubstr("nats: set only one of token and token_env"));
  EXPECT_THAT(
      problem("secrets:\n  master_key_file: f\n  master_key_env: E\n"),
      HasSubstr("test.yaml:1: secrets: set only one of master_key_file, master_key_env and "
                "passphrase_env"));
  EXPECT_THAT(problem("nats:\n  urls: []\n"),
              HasSubstr("test.yaml:2: nats.urls: needs at least one URL"));
  EXPECT_THAT(problem("nats:\n  urls: 'ftp://x'\n"),
              HasSubstr("test.yaml:2: nats.urls: URL \"ftp://x\""));
}

// --- Secrets stay out of messages -----------------------------------------------------------

TEST(Config, SecretValuesAreNotEchoed) {
  const auto all =
      problems("nats:\n  token: [hunter2]\n  urls: nats://user:hunter2@host:bad port\n");
  for (const auto& p : all) EXPECT_THAT(p, Not(HasSubstr("hunter2")));
  EXPECT_THAT(all, Contains(HasSubstr("nats.token: expected a string")));
}

// --- Syntax errors, empty input, hostile documents ------------------------------------------

TEST(Config, SyntaxError) {
  EXPECT_THAT(problem("org: demo\nnats:\n  urls: [nats://a\n  data_dir: x\n"),
              AllOf(HasSubstr("test.yaml:"), HasSubstr("YAML syntax error")));
  EXPECT_THAT(problem("org: demo\n  bad: indent\n"), HasSubstr("test.yaml:2: YAML syntax error"));
}

TEST(Config, EmptyFile) {
  EXPECT_THAT(problem(""), HasSubstr("test.yaml:1: the file is empty"));
  EXPECT_THAT(problem("# only a comment\n"), HasSubstr("test.yaml:1: the file is empty"));
  EXPECT_THAT(problem("~\n"), HasSubstr("the file is empty"));
}

TEST(Config, MoreThanOneDocument) {
  EXPECT_THAT(problem("org: a\n---\norg: b\n"), HasSubstr("more than one YAML document"));
}

TEST(Config, StrayTopLevelCommaIsASyntaxError) {
  // yaml-cpp 0.7's LoadAll() loops forever on this input: the loader must not.
  EXPECT_EQ(problem(","), "test.yaml:1: YAML syntax error: unexpected character");
  EXPECT_THAT(problem("\n\n,"), HasSubstr("test.yaml:3: YAML syntax error"));
  EXPECT_THAT(problem("[a],"), HasSubstr("test.yaml:1: YAML syntax error: unexpected text after"));
}

TEST(Config, AliasesAreResolved) {
  const Config c = load(
      "providers:\n  local: {type: local}\n"
      "repos:\n  api:\n    deploy:\n      dev: &dev {provider: local, duration: 1s}\n"
      "  web:\n    deploy:\n      dev: *dev\n");
  EXPECT_EQ(c.repos.at("web").deploy.at("dev").provider, "local");
}

TEST(Config, SelfReferentialAliasIsRejected) {
  EXPECT_THAT(problems("repos: &a\n  x: *a\n"), Contains(HasSubstr("nested deeper than")));
  EXPECT_THAT(problems("providers:\n  p: &a {type: local, loop: [*a]}\n"),
              Contains(HasSubstr("nested deeper than")));
}

TEST(Config, AliasBombIsRejected) {
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) yaml += (j ? ", *a" : "*a") + std::to_string(i - 1);
    yaml += "]\n";
  }
  EXPECT_THAT(problems(yaml), Contains(HasSubstr("too large")));
}

// What a large org writes: 10,000 repos, each with a deploy target, health services and
// secret names (over 200,000 nodes), loads; so does the same org sharing one anchored target.
std::string large_org(int repos, bool shared_target) {
  std::string yaml = "providers:\n  local: {type: local}\nrepos:\n";
  for (int i = 0; i < repos; ++i) {
    const std::string name = "repo-" + std::to_string(i);
    yaml += "  " + name + ":\n    deploy:\n";
    if (!shared_target) {
      yaml += "      production: {provider: local, duration: 1s}\n";
    } else if (i == 0) {
      yaml += "      production: &target {provider: local, duration: 1s}\n";
    } else {
      yaml += "      production: *target\n";
    }
    yaml += "    health: {services: [http, worker, db], ttl: 30s}\n"
            "    secrets: [DATABASE_URL, SESSION_KEY, API_TOKEN]\n";
  }
  return yaml;
}

TEST(Config, TenThousandReposLoad) {
  const Config c = load(large_org(10000, false));
  ASSERT_EQ(c.repos.size(), 10000u);
  EXPECT_EQ(c.repos.at("repo-9999").deploy.at("production").provider, "local");
  EXPECT_EQ(c.repos.at("repo-9999").health.services.size(), 3u);
  // One anchored target shared by every repo (each alias expanded) loads as well.
  const Config shared = load(large_org(3000, true));
  EXPECT_EQ(shared.repos.at("repo-2999").deploy.at("production").provider, "local");
}

TEST(Config, AnAliasBombAsLongAsALargeConfigIsStillRejected) {
  // The node budget grows with the text, not with what the aliases expand to.
  std::string yaml = large_org(2000, false);
  yaml += "bomb:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    yaml += "  a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) yaml += (j ? ", *a" : "*a") + std::to_string(i - 1);
    yaml += "]\n";
  }
  EXPECT_THAT(problems(yaml), Contains(HasSubstr("too large")));
}

TEST(Config, DeepNestingIsRejected) {
  EXPECT_THAT(problems("a: " + std::string(40, '[') + std::string(40, ']') + "\n"),
              Contains(HasSubstr("test.yaml:1: nested deeper than 32 levels")));
  // Beyond yaml-cpp's own recursion limit: still a ConfigError, not a crash.
  EXPECT_THAT(problems(std::string(5000, '[')), Not(IsEmpty()));
}

TEST(Config, ControlCharactersInKeysAreEscaped) {
  const auto p = problem("\"na\\x01ts\": 1\n");
  EXPECT_THAT(p, HasSubstr("na\\x01ts: unknown key"));
}

// --- Environment overrides ------------------------------------------------------------------

TEST(ConfigEnvironment, NatsUrlTurnsEmbeddedOff) {
  const Config c =
      load("nats:\n  embedded: true\n", Environment{{{"NATS_URL", "nats://remote:4222"}}});
  EXPECT_FALSE(c.nats.embedded);
  EXPECT_THAT(c.nats.urls, ElementsAre("nats://remote:4222"));
}

TEST(ConfigEnvironment, NatsUrlsListWinsOverNatsUrl) {
  const Config c = load(
      "nats:\n  embedded: true\n",
      Environment{{{"NATS_URL", "nats://one:4222"}, {"NATS_URLS", "nats://a:4222,nats://b:4222"}}});
  EXPECT_FALSE(c.nats.embedded);
  EXPECT_THAT(c.nats.urls, ElementsAre("nats://a:4222", "nats://b:4222"));
}

TEST(ConfigEnvironment, EmptyValuesAreIgnored) {
  const Config c = load("nats:\n  embedded: true\n", Environment{{{"NATS_URL", ""}}});
  EXPECT_TRUE(c.nats.embedded);
}

TEST(ConfigEnvironment, CredentialsAndTls) {
  const Config c = load("org: demo\n", Environment{{{"NATS_CREDS_FILE", "/c.creds"},
                                                    {"NATS_NKEY_FILE", "/u.nk"},
                                                    {"NATS_TLS_CA_FILE", "/ca.pem"},
                                                    {"NATS_TLS_CERT_FILE", "/cert.pem"},
                                                    {"NATS_TLS_KEY_FILE", "/key.pem"}}});
  EXPECT_EQ(c.nats.creds_file, "/c.creds");
  EXPECT_EQ(c.nats.nkey_file, "/u.nk");
  EXPECT_EQ(c.nats.tls.ca_file, "/ca.pem");
  EXPECT_EQ(c.nats.tls.cert_file, "/cert.pem");
  EXPECT_EQ(c.nats.tls.key_file, "/key.pem");
}

TEST(ConfigEnvironment, JwtAndSeedNamesOnly) {
  const Config c = load("org: demo\n", Environment{{{"NATS_JWT", "eyJ0eXAiOiJKV1QifQ.secret"},
                                                    {"NATS_NKEY_SEED", "SUAsecretseed"}}});
  EXPECT_EQ(c.nats.jwt_env, "NATS_JWT");
  EXPECT_EQ(c.nats.nkey_seed_env, "NATS_NKEY_SEED");
  EXPECT_THAT(c.nats.token, IsEmpty());
  EXPECT_THAT(c.nats.creds_file, IsEmpty());
}

TEST(ConfigEnvironment, JwtWithoutSeedIsAnError) {
  const auto p = problem("org: demo\n", Environment{{{"NATS_JWT", "eyJsecret"}}});
  EXPECT_THAT(p, HasSubstr("environment: NATS_JWT: is set without NATS_NKEY_SEED"));
  EXPECT_THAT(p, Not(HasSubstr("eyJsecret")));
}

TEST(ConfigEnvironment, HttpListen) {
  const Config c =
      load("http:\n  listen: 127.0.0.1:8080\n", Environment{{{"ORGD_HTTP_LISTEN", "[::]:9999"}}});
  EXPECT_EQ(c.http.host, "::");
  EXPECT_EQ(c.http.port, 9999);
  EXPECT_THAT(problem("org: demo\n", Environment{{{"ORGD_HTTP_LISTEN", "nope"}}}),
              HasSubstr("environment: ORGD_HTTP_LISTEN: invalid listen address \"nope\""));
}

TEST(ConfigEnvironment, BadUrl) {
  EXPECT_THAT(problem("org: demo\n", Environment{{{"NATS_URLS", "nats://a:4222,,nats://b"}}}),
              HasSubstr("environment: NATS_URLS: empty URL"));
}

TEST(ConfigEnvironment, ProblemsJoinFileProblems) {
  const auto all = problems("log: {level: loud}\n", Environment{{{"ORGD_HTTP_LISTEN", "x"}}});
  EXPECT_THAT(all, SizeIs(2));
}

TEST(ConfigEnvironment, CurrentReadsTheProcessEnvironment) {
  ASSERT_EQ(setenv("ORGD_CONFIG_TEST_VAR", "a=b", 1), 0);
  const Environment env = Environment::current();
  EXPECT_EQ(env.get("ORGD_CONFIG_TEST_VAR"), "a=b");
  EXPECT_EQ(env.get("ORGD_CONFIG_TEST_UNSET_VAR"), std::nullopt);
  unsetenv("ORGD_CONFIG_TEST_VAR");
}

// --- Shipped files --------------------------------------------------------------------------

TEST(ShippedConfig, EmbeddedDefaultIsTheDevConfig) {
  std::ifstream in(std::string{ORGD_SOURCE_DIR} + "/config/orgd.dev.yaml", std::ios::binary);
  ASSERT_TRUE(in);
  const std::string file{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  EXPECT_EQ(embedded_default_config(), file);
}

// A container platform that passes env vars but mounts no files gives the config in
// ORGD_CONFIG_YAML; a path (--config or ORGD_CONFIG) wins over it, and without either orgd runs
// the embedded default. Problems name where the config came from.
TEST(DaemonConfig, ComesFromThePathTheEnvironmentOrTheEmbeddedDefault) {
  const Environment none;
  EXPECT_EQ(config_origin("", none), "<embedded>");
  EXPECT_EQ(load_daemon_config("", none).org, "demo");

  const Environment yaml(std::map<std::string, std::string>{
      {"ORGD_CONFIG_YAML", "org: acme\nrepos:\n  api: {}\n"}});
  EXPECT_EQ(config_origin("", yaml), "$ORGD_CONFIG_YAML");
  const Config from_env = load_daemon_config("", yaml);
  EXPECT_EQ(from_env.org, "acme");
  EXPECT_EQ(from_env.source, "$ORGD_CONFIG_YAML");

  const std::string dev = std::string{ORGD_SOURCE_DIR} + "/config/orgd.dev.yaml";
  EXPECT_EQ(config_origin(dev, yaml), dev);
  EXPECT_EQ(load_daemon_config(dev, yaml).org, "demo");

  const Environment broken(
      std::map<std::string, std::string>{{"ORGD_CONFIG_YAML", "org: acme\nrepoz: {}\n"}});
  try {
    load_daemon_config("", broken);
    FAIL() << "an unknown key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("$ORGD_CONFIG_YAML:2"), std::string::npos) << e.what();
  }
}

TEST(ShippedConfig, DevConfigLoads) {
  const Config c = load_config_string(embedded_default_config(), "<embedded>", Environment{});
  EXPECT_EQ(c.source, "<embedded>");
  EXPECT_EQ(c.org, "demo");
  EXPECT_EQ(c.prefix(), "org.demo");
  EXPECT_TRUE(c.nats.embedded);
  EXPECT_THAT(c.nats.urls, ElementsAre("nats://127.0.0.1:4222"));
  EXPECT_EQ(c.nats.data_dir, ".orgd");
  EXPECT_EQ(c.http.listen(), "127.0.0.1:8080");
  ASSERT_EQ(c.providers.count("local"), 1u);
  EXPECT_EQ(c.providers.at("local").type, "local");
  ASSERT_EQ(c.repos.size(), 3u);
  EXPECT_THAT(c.repos.at("api").depends_on, IsEmpty());
  EXPECT_THAT(c.repos.at("web").depends_on, ElementsAre("api"));
  EXPECT_THAT(c.repos.at("worker").depends_on, ElementsAre("api"));
  for (const auto& [name, repo] : c.repos) {
    ASSERT_EQ(repo.deploy.count("dev"), 1u) << name;
    EXPECT_EQ(repo.deploy.at("dev").provider, "local");
    EXPECT_EQ(repo.deploy.at("dev").settings["duration"].as<std::string>(), "2s");
    EXPECT_EQ(repo.health.ttl, seconds{30});
  }
  EXPECT_THAT(c.repos.at("api").health.services, ElementsAre("http"));
  EXPECT_THAT(c.repos.at("worker").health.services, ElementsAre("worker"));
}

TEST(ShippedConfig, DevConfigFileLoadsFromDisk) {
  const Config c =
      load_config_file(std::string{ORGD_SOURCE_DIR} + "/config/orgd.dev.yaml", Environment{});
  EXPECT_EQ(c.org, "demo");
  EXPECT_THAT(c.source, HasSubstr("orgd.dev.yaml"));
}

TEST(ShippedConfig, ExampleConfigLoads) {
  const Config c =
      load_config_file(std::string{ORGD_SOURCE_DIR} + "/config/orgd.example.yaml", Environment{});
  EXPECT_EQ(c.org, "acme");
  // What is built; the other types are documented there in comments, as coming.
  for (const char* type : {"exec", "local"}) {
    EXPECT_TRUE(std::any_of(c.providers.begin(), c.providers.end(), [&](const auto& p) {
      return p.second.type == type;
    })) << type;
  }
  EXPECT_EQ(c.nats.replicas, 3);
  EXPECT_EQ(c.log.format, "json");
  EXPECT_FALSE(c.repos.empty());
  // The providers accept their settings, as orgd --check-config requires (the e2e test runs it).
  EXPECT_NO_THROW(deploy::Inventory::build(c, ProviderRegistry{}, ProviderEnvironment{"/tmp"}));
  // The target example of a gate map turns the gate on.
  EXPECT_TRUE(
      c.repos.at("web").deploy.at("production").policy.apply(c.deploy.step).health_gate.enabled);
}

TEST(ConfigFile, MissingFile) {
  try {
    load_config_file("/nonexistent/orgd.yaml", Environment{});
    FAIL() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(std::string{e.what()}, HasSubstr("/nonexistent/orgd.yaml: cannot open"));
  }
}

TEST(ConfigFile, ErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "orgd_config_test.yaml";
  {
    std::ofstream out(path);
    out << "org: demo\nnats:\n  tls:\n    ca_fil: x\n";
  }
  try {
    load_config_file(path, Environment{});
    FAIL() << "loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), ElementsAre(path + ":4: nats.tls.ca_fil: unknown key (expected one "
                                                 "of: ca_file, cert_file, key_file)"));
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace orgd
