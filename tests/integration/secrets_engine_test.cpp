// The secrets engine in orgd, end to end: a real nats-server (JetStream KV for the vault and the
// sync records), the fake GitHub (which opens every sealed box it is sent), .env sources, the
// sealed intake of P.api.secrets.set, sync, rotation by command, backups and restores over the
// API. The canary test runs all of it with canary values and scans every log line (debug),
// every message seen on the bus, every message stored in any stream or KV bucket, the metrics
// and every reply for them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "daemon/app/daemon.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/secrets.pb.h"
#include "tests/fakes/fake_github.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/deploy_api.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/secret_values.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::api_call;
using testing::ApiReply;
using testing::connect_client;
using testing::FakeGithubServer;
using testing::NatsServer;
using testing::SecretScope;
using testing::TempDir;
using testing::wait_until;
using ::testing::HasSubstr;

constexpr const char* kToken = "ghp_secretsEngineTestToken0123456789abcd";
constexpr const char* kPrefix = "org.acme";

using testing::canary;

class SecretsEngineTest : public ::testing::Test {
 protected:
  SecretsEngineTest() : logs_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(200000)) {
    logging::add_sink(logs_);
  }
  ~SecretsEngineTest() override { logging::remove_sink(logs_); }

  void write(const std::string& name, const std::string& text) {
    std::ofstream out(data_.path() / name);
    out << text;
  }

  void start(const std::string& extra_secrets = "") {
    fake_.github().add_token(kToken);
    org_db_ = canary("org-db");
    api_db_ = canary("api-db");
    npm_ = canary("npm");
    session_ = canary("session");
    write("org.env", "# org-wide\nDATABASE_URL=" + org_db_ + "\nexport NPM_TOKEN='" + npm_ +
                         "'\nSESSION_KEY=\"" + session_ + "\"\n");
    write("api.env", "DATABASE_URL=" + api_db_ + "\n");
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" + server_.url() + "]\n  data_dir: " + data_.str() + "\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "log:\n  level: debug\n"
        "providers:\n"
        "  gh: {type: github, api_url: '" + fake_.base_url() + "', token_env: GH_TOKEN}\n"
        "repos:\n"
        "  api:\n    secrets: [DATABASE_URL, SESSION_KEY]\n"
        "    secret_targets:\n      - {provider: gh}\n"
        "  web:\n    secrets: [DATABASE_URL]\n    secret_targets:\n      - {provider: gh}\n"
        "secrets:\n"
        "  master_key_env: ORGD_MASTER_KEY\n"
        "  sources:\n"
        "    - {file: " + (data_.path() / "org.env").string() + ", scope: org}\n"
        "    - {file: " + (data_.path() / "api.env").string() + ", scope: api}\n"
        "  org_targets:\n    - {provider: gh, names: [NPM_TOKEN]}\n"
        "  sync_interval: 0\n"
        "  rotation:\n    SESSION_KEY: {generate: {length: 40}, overlap: 0s}\n" +
        extra_secrets;
    master_key_ = testing::random_master_key_base64();
    const Environment env(std::map<std::string, std::string>{
        {"GH_TOKEN", kToken}, {"ORGD_MASTER_KEY", master_key_}, {"BACKUP_PASS", "unused"}});
    DaemonOptions options;
    options.kdf_cost = secrets::KdfCost::minimal();
    daemon_ = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", env), options, env);
    daemon_->start();
    ASSERT_TRUE(wait_until([&] { return daemon_->ready(); }, 20s)) << "orgd never became ready";
    client_ = connect_client(server_.url());
    bus_ = std::make_unique<testing::Collector>(client_.get(), ">");
  }

  void TearDown() override {
    bus_.reset();
    if (daemon_) daemon_->stop();
  }

  ApiReply call(const std::string& op, const std::string& body, std::chrono::milliseconds timeout = 30s) {
    auto reply = api_call(client_.get(), std::string{kPrefix} + ".api." + op, body, timeout);
    EXPECT_TRUE(reply.has_value()) << op << ": no answer";
    replies_.push_back(reply ? reply->data + reply->error.value_or("") : std::string{});
    return reply.value_or(ApiReply{});
  }

  std::string vault_key() {
    for (int i = 0; i < 100; ++i) {
      auto reply = call("secrets.key", "{}");
      v1::SecretsKey key;
      if (!reply.error_code && decode(reply.data, Encoding::json, key, 1 << 20).ok()) {
        return key.public_key();
      }
      std::this_thread::sleep_for(100ms);  // the vault opens after the connection is up
    }
    ADD_FAILURE() << "P.api.secrets.key never answered with a key";
    return {};
  }

  // P.api.secrets.set of one value sealed to the vault's key.
  ApiReply set_secret(const std::string& scope, const std::string& name, const std::string& value) {
    const std::string key = vault_key();
    auto sealed = seal_to(key, Secret::from(value));
    EXPECT_TRUE(sealed.ok());
    v1::SecretSetRequest request;
    request.set_scope(scope);
    request.set_actor("test");
    request.set_sync(true);
    auto* item = request.add_secrets();
    item->set_name(name);
    item->set_sealed_value(sealed.value());
    return call("secrets.set", encode(request, Encoding::json));
  }

  std::optional<std::string> at_github(const SecretScope& scope, const std::string& name) {
    return fake_.github().secret_value(scope, name);
  }

  bool github_has(const SecretScope& scope, const std::string& name, const std::string& value) {
    return at_github(scope, name) == value;
  }

  v1::SecretSyncReport sync(bool dry_run) {
    v1::SecretSyncRequest request;
    request.set_all(true);
    request.set_dry_run(dry_run);
    request.set_actor("test");
    auto reply = call("secrets.sync", encode(request, Encoding::json));
    EXPECT_FALSE(reply.error_code) << reply.data;
    v1::SecretSyncReport report;
    EXPECT_TRUE(decode(reply.data, Encoding::json, report, 1 << 20).ok()) << reply.data;
    return report;
  }

  std::size_t writes() {
    std::size_t n = 0;
    for (const auto& c : fake_.github().calls()) {
      if (c.method == "PUT" || c.method == "DELETE") ++n;
    }
    return n;
  }

  // Every message stored in every stream of the server (KV buckets are streams too).
  std::vector<std::string> stored_messages() {
    std::vector<std::string> out;
    jsCtx* js = nullptr;
    EXPECT_EQ(natsConnection_JetStream(&js, client_.get(), nullptr), NATS_OK);
    jsStreamNamesList* names = nullptr;
    EXPECT_EQ(js_StreamNames(&names, js, nullptr, nullptr), NATS_OK);
    for (int i = 0; names != nullptr && i < names->Count; ++i) {
      jsStreamInfo* info = nullptr;
      if (js_GetStreamInfo(&info, js, names->List[i], nullptr, nullptr) != NATS_OK) continue;
      for (std::uint64_t seq = info->State.FirstSeq; seq <= info->State.LastSeq && seq > 0; ++seq) {
        natsMsg* msg = nullptr;
        if (js_GetMsg(&msg, js, names->List[i], seq, nullptr, nullptr) != NATS_OK) continue;
        const BusMessage copy = BusMessage::copy_from(msg);
        natsMsg_Destroy(msg);
        std::string all = copy.subject + " " + copy.data;
        for (const auto& [h, v] : copy.headers) all += " " + h + ":" + v;
        out.push_back(std::string{names->List[i]} + ": " + all);
      }
      jsStreamInfo_Destroy(info);
    }
    if (names != nullptr) jsStreamNamesList_Destroy(names);
    jsCtx_Destroy(js);
    return out;
  }

  std::vector<std::string> log_lines() { return logs_->last_formatted(); }

  NatsServer server_;
  TempDir data_{"orgd-secrets"};
  FakeGithubServer fake_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> logs_;
  std::unique_ptr<Daemon> daemon_;
  testing::NatsConnectionPtr client_;
  std::unique_ptr<testing::Collector> bus_;
  std::vector<std::string> replies_;
  std::string master_key_, org_db_, api_db_, npm_, session_;
};

const SecretScope kApi = SecretScope::repository("acme", "api");
const SecretScope kWeb = SecretScope::repository("acme", "web");
const SecretScope kOrg = SecretScope::org("acme");

TEST_F(SecretsEngineTest, SourcesAreImportedAndEachTargetGetsItsScopesValue) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kApi, "DATABASE_URL", api_db_); }, 30s))
      << "api's own value overrides the org's";
  ASSERT_TRUE(wait_until([&] { return github_has(kWeb, "DATABASE_URL", org_db_); }, 30s))
      << "web has no value of its own: the org's";
  ASSERT_TRUE(wait_until([&] { return github_has(kApi, "SESSION_KEY", session_); }, 30s));
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", npm_); }, 30s));
  // web gets only what it lists.
  EXPECT_FALSE(at_github(kWeb, "SESSION_KEY").has_value());
  EXPECT_FALSE(at_github(kWeb, "NPM_TOKEN").has_value());
}

TEST_F(SecretsEngineTest, ASyncWithNothingChangedListsEachTargetOnceAndWritesNothing) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", npm_); }, 30s));
  ASSERT_TRUE(wait_until([&] { return github_has(kWeb, "DATABASE_URL", org_db_); }, 30s));
  // Let the sync after the import finish (its records are what the next sync compares with).
  ASSERT_TRUE(wait_until([&] { return sync(true).results_size() > 0; }, 10s));
  ASSERT_TRUE(wait_until(
      [&] {
        const auto plan = sync(true);
        for (const auto& r : plan.results()) {
          if (r.action() != "none") return false;
        }
        return true;
      },
      30s));
  fake_.github().clear_calls();
  const auto report = sync(false);
  EXPECT_EQ(report.pushed(), 0);
  EXPECT_EQ(report.failed(), 0);
  EXPECT_EQ(writes(), 0u) << "nothing changed: no PUT, no DELETE";
  std::size_t lists = 0;
  for (const auto& c : fake_.github().calls()) {
    if (c.method == "GET" && c.path.find("/actions/secrets") != std::string::npos &&
        c.path.find("public-key") == std::string::npos) {
      ++lists;
    }
  }
  EXPECT_EQ(lists, 3u) << "one listing per target (api, web, org)";
}

TEST_F(SecretsEngineTest, ASealedSetIsStoredAndPushedAndAnUnsealedOneIsRefused) {
  start();
  const std::string fresh = canary("fresh-db");
  const auto reply = set_secret("web", "DATABASE_URL", fresh);
  ASSERT_FALSE(reply.error_code) << reply.data;
  v1::SecretSetReply written;
  ASSERT_TRUE(decode(reply.data, Encoding::json, written, 1 << 20).ok());
  ASSERT_EQ(written.written_size(), 1);
  EXPECT_TRUE(written.written(0).changed());
  ASSERT_TRUE(wait_until([&] { return github_has(kWeb, "DATABASE_URL", fresh); }, 30s));
  EXPECT_TRUE(wait_until([&] { return github_has(kApi, "DATABASE_URL", api_db_); }, 5s));

  // A value in clear (not sealed) never reaches the vault.
  v1::SecretSetRequest clear;
  clear.set_scope("org");
  auto* item = clear.add_secrets();
  item->set_name("NPM_TOKEN");
  item->set_sealed_value("plain-text-value-not-sealed-at-all-0000000000000000");
  const auto refused = call("secrets.set", encode(clear, Encoding::json));
  ASSERT_TRUE(refused.error_code.has_value());
  EXPECT_EQ(*refused.error_code, "400");
  EXPECT_THAT(refused.data, HasSubstr("not sealed"));
  // An unknown scope is refused too.
  EXPECT_TRUE(set_secret("nope", "A", "x").error_code.has_value());
}

TEST_F(SecretsEngineTest, ListShowsVersionsScopesAndWhetherEachTargetHasTheValue) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kWeb, "DATABASE_URL", org_db_); }, 30s));
  v1::SecretList list;
  ASSERT_TRUE(wait_until(
      [&] {
        auto reply = call("secrets.list", "{}");
        if (reply.error_code || !decode(reply.data, Encoding::json, list, 1 << 20).ok()) {
          return false;
        }
        for (const auto& s : list.secrets()) {
          for (const auto& t : s.targets()) {
            if (t.state() != "in_sync") return false;
          }
        }
        return list.secrets_size() == 4;
      },
      30s))
      << list.DebugString();
  bool saw_api_db = false;
  for (const auto& s : list.secrets()) {
    if (s.scope() == "api" && s.name() == "DATABASE_URL") {
      saw_api_db = true;
      EXPECT_EQ(s.version(), 1);
      EXPECT_EQ(s.source(), "import");
      ASSERT_EQ(s.targets_size(), 1);
      EXPECT_THAT(s.targets(0).target(), HasSubstr("acme/api"));
    }
    if (s.scope() == "org" && s.name() == "DATABASE_URL") {
      ASSERT_EQ(s.targets_size(), 1) << "only web uses the org's DATABASE_URL";
      EXPECT_THAT(s.targets(0).target(), HasSubstr("acme/web"));
    }
  }
  EXPECT_TRUE(saw_api_db);
}

TEST_F(SecretsEngineTest, ARotationCommandPutsANewValueEverywhereAndRetiresTheOld) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kApi, "SESSION_KEY", session_); }, 30s));
  BusMessage command;
  command.subject = std::string{kPrefix} + ".cmd.secrets.rotate";
  command.data = R"({"name":"SESSION_KEY","requestId":"rot-1","reason":"test"})";
  command.set_header("Nats-Msg-Id", "rot-1");
  ASSERT_EQ(natsConnection_PublishString(client_.get(), command.subject.c_str(),
                                         command.data.c_str()),
            NATS_OK);
  std::string rotated;
  ASSERT_TRUE(wait_until(
      [&] {
        const auto now = at_github(kApi, "SESSION_KEY");
        if (now && *now != session_) rotated = *now;
        return !rotated.empty();
      },
      60s));
  EXPECT_EQ(rotated.size(), 40u);
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& m : bus_->messages()) {
          if (m.subject == std::string{kPrefix} + ".events.secrets.SESSION_KEY.rotation_retired") {
            return true;
          }
        }
        return false;
      },
      60s));
}

TEST_F(SecretsEngineTest, ABackupRestoresTheVaultAndATamperedOneChangesNothing) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", npm_); }, 30s));
  const std::string key = vault_key();
  const auto pass = seal_to(key, Secret::from("correct horse battery staple"));
  ASSERT_TRUE(pass.ok());
  v1::SecretBackupRequest backup_request;
  backup_request.set_sealed_passphrase(pass.value());
  const auto backup_reply = call("secrets.backup", encode(backup_request, Encoding::json));
  ASSERT_FALSE(backup_reply.error_code) << backup_reply.data;
  v1::SecretBackupReply backup;
  ASSERT_TRUE(decode(backup_reply.data, Encoding::json, backup, 1 << 22).ok());
  EXPECT_EQ(backup.secrets(), 4);
  EXPECT_EQ(backup.backup().find(npm_), std::string::npos) << "the file is encrypted";

  // The vault changes after the backup; the restore brings the backed-up value back.
  ASSERT_FALSE(set_secret("org", "NPM_TOKEN", canary("npm-later")).error_code);
  v1::SecretRestoreRequest restore;
  restore.set_backup(backup.backup());
  const auto wrong = seal_to(key, Secret::from("wrong passphrase"));
  restore.set_sealed_passphrase(wrong.value());
  const auto refused = call("secrets.restore", encode(restore, Encoding::json));
  EXPECT_TRUE(refused.error_code.has_value()) << "a wrong passphrase is refused";
  std::string tampered = backup.backup();
  tampered[tampered.size() / 2] ^= 0x01;
  restore.set_backup(tampered);
  restore.set_sealed_passphrase(pass.value());
  EXPECT_TRUE(call("secrets.restore", encode(restore, Encoding::json)).error_code.has_value())
      << "a tampered backup is refused";
  restore.set_backup(backup.backup());
  const auto restored = call("secrets.restore", encode(restore, Encoding::json));
  ASSERT_FALSE(restored.error_code) << restored.data;
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", npm_); }, 30s))
      << "the restored value is pushed again";
}

TEST_F(SecretsEngineTest, NoCanaryValueIsLoggedPublishedStoredInClearOrCounted) {
  start();
  ASSERT_TRUE(wait_until([&] { return github_has(kApi, "DATABASE_URL", api_db_); }, 30s));
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", npm_); }, 30s));
  const std::string set_value = canary("set");
  ASSERT_FALSE(set_secret("org", "NPM_TOKEN", set_value).error_code);
  ASSERT_TRUE(wait_until([&] { return github_has(kOrg, "NPM_TOKEN", set_value); }, 30s));
  (void)sync(true);
  (void)sync(false);
  (void)call("secrets.list", "{}");
  (void)call("secrets.rotate", R"({"name":"SESSION_KEY","actor":"test"})");
  ASSERT_TRUE(wait_until(
      [&] {
        const auto now = at_github(kApi, "SESSION_KEY");
        return now && *now != session_;
      },
      60s));
  const std::string rotated = *at_github(kApi, "SESSION_KEY");
  // Hostile and malformed inputs on the secrets subjects: errors, dead letters.
  (void)call("secrets.set", "{not json");
  (void)call("secrets.set", R"({"scope":"org","secrets":[{"name":"X","sealedValue":"AAAA"}]})");
  (void)natsConnection_PublishString(client_.get(), "org.acme.cmd.secrets.sync", "garbage");
  const std::string key = vault_key();
  v1::SecretBackupRequest backup_request;
  (void)call("secrets.backup", encode(backup_request, Encoding::json));
  std::this_thread::sleep_for(500ms);  // let the dead letters and events land before the scan

  const std::vector<std::string> canaries{org_db_, api_db_, npm_, session_, set_value, rotated,
                                          master_key_, kToken};
  std::vector<std::string> haystacks;
  for (const auto& line : log_lines()) haystacks.push_back("log: " + line);
  for (const auto& m : bus_->messages()) {
    std::string all = m.subject + " " + m.data;
    for (const auto& [h, v] : m.headers) all += " " + h + ":" + v;
    haystacks.push_back("bus: " + all);
  }
  for (auto& stored : stored_messages()) haystacks.push_back("stored: " + stored);
  haystacks.push_back("metrics: " + daemon_->metrics().render());
  for (const auto& r : replies_) haystacks.push_back("reply: " + r);
  ASSERT_GT(haystacks.size(), 50u) << "the scan must have something to look at";
  bool saw_vault_entry = false;
  for (const auto& h : haystacks) {
    if (h.find("KV_orgd_vault") != std::string::npos) saw_vault_entry = true;
    for (const auto& c : canaries) {
      EXPECT_EQ(h.find(c), std::string::npos) << "canary " << c.substr(0, 14) << "… in " << h.substr(0, 300);
    }
  }
  EXPECT_TRUE(saw_vault_entry) << "the vault's entries were scanned";
}

}  // namespace
}  // namespace orgd
