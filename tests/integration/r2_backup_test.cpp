// The secrets engine's backups in R2 (docs/r2-backups.md), in orgd with a real nats-server, the
// fake Cloudflare API and the fake S3 (which checks every request's SigV4 signature): a backup
// written to the bucket over P.api.secrets.backup and restored from its key over
// P.api.secrets.restore (orgd fetches it; the values come back at the Worker secret target;
// no value in clear in any request the fakes recorded, nor in the stored object), the store's
// listing, scheduled backups pruned to `keep` in the bucket, and a failed upload reported as an
// event and tried again at the next interval.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "daemon/app/daemon.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/secrets.pb.h"
#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/fakes/fake_s3.hpp"
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
using testing::canary;
using testing::connect_client;
using testing::FakeCloudflareServer;
using testing::FakeS3Server;
using ::testing::HasSubstr;
using testing::NatsServer;
using testing::TempDir;
using testing::wait_until;

constexpr const char* kCfToken = "cf-r2-backup-test-token-canary-31f0";
constexpr const char* kPrefix = "org.acme";
constexpr const char* kBucket = "acme-backups";

class R2BackupTest : public ::testing::Test {
 protected:
  R2BackupTest() {
    cf_.cloudflare().add_token(kCfToken);
    cf_.cloudflare().add_worker("acme-api");
    testing::connect_r2(cf_.cloudflare(), s3_.s3());
  }

  void start(const std::string& backup) {
    db_ = canary("db");
    session_ = canary("session");
    std::ofstream(data_.path() / "org.env")
        << "DATABASE_URL=" << db_ << "\nSESSION_KEY=" << session_ << "\n";
    const std::string yaml =
        "org: acme\n"
        "nats:\n  urls: [" +
        server_.url() + "]\n  data_dir: " + data_.str() +
        "\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "providers:\n"
        "  cf: {type: cloudflare, api_url: '" +
        cf_.base_url() +
        "', token_env: CF_TOKEN, "
        "account_id: " +
        cf_.cloudflare().account_id() + ", r2_url: '" + s3_.base_url() +
        "'}\n"
        "repos:\n"
        "  api:\n    secrets: [DATABASE_URL, SESSION_KEY]\n"
        "    secret_targets:\n      - {provider: cf, script: acme-api}\n"
        "secrets:\n"
        "  master_key_env: ORGD_MASTER_KEY\n"
        "  sources:\n    - {file: " +
        (data_.path() / "org.env").string() +
        ", scope: org}\n"
        "  sync_interval: 0\n"
        "  backup: " +
        backup + "\n";
    const Environment env(std::map<std::string, std::string>{
        {"CF_TOKEN", kCfToken}, {"ORGD_MASTER_KEY", testing::random_master_key_base64()}});
    DaemonOptions options;
    options.kdf_cost = secrets::KdfCost::minimal();
    daemon_ = std::make_unique<Daemon>(load_config_string(yaml, "test.yaml", env), options, env);
    daemon_->start();
    ASSERT_TRUE(wait_until([&] { return daemon_->ready(); }, 20s)) << "orgd never became ready";
    client_ = connect_client(server_.url());
    events_ = std::make_unique<testing::Collector>(client_.get(),
                                                   std::string{kPrefix} + ".events.secrets.>");
  }

  void TearDown() override {
    events_.reset();
    if (daemon_) daemon_->stop();
  }

  ApiReply call(const std::string& op, const std::string& body) {
    auto reply = api_call(client_.get(), std::string{kPrefix} + ".api." + op, body, 30s);
    EXPECT_TRUE(reply.has_value()) << op << ": no answer";
    return reply.value_or(ApiReply{});
  }

  std::string vault_key() {
    for (int i = 0; i < 100; ++i) {
      auto reply = call("secrets.key", "{}");
      v1::SecretsKey key;
      if (!reply.error_code && decode(reply.data, Encoding::json, key, 1 << 20).ok()) {
        return key.public_key();
      }
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "P.api.secrets.key never answered with a key";
    return {};
  }

  ApiReply set_secret(const std::string& name, const std::string& value) {
    auto sealed = seal_to(vault_key(), Secret::from(value));
    EXPECT_TRUE(sealed.ok());
    v1::SecretSetRequest request;
    request.set_scope("org");
    request.set_actor("test");
    request.set_sync(true);
    auto* item = request.add_secrets();
    item->set_name(name);
    item->set_sealed_value(sealed.value());
    return call("secrets.set", encode(request, Encoding::json));
  }

  bool worker_has(const std::string& name, const std::string& value) {
    const auto secrets = cf_.cloudflare().secrets("acme-api");
    const auto it = secrets.find(name);
    return it != secrets.end() && it->second == value;
  }

  std::vector<std::string> backups_in_bucket(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& [key, bytes] : s3_.s3().objects(kBucket)) {
      if (key.rfind(prefix + "orgd-vault-", 0) == 0) out.push_back(key);
    }
    return out;
  }

  // No canary value in clear in anything the fake S3 was sent, or holds.
  void expect_values_never_in_clear() {
    for (const auto& call : s3_.s3().calls()) {
      for (const auto& value : {db_, session_, later_}) {
        if (value.empty()) continue;
        EXPECT_EQ(call.body.find(value), std::string::npos) << call.method << " " << call.path;
        EXPECT_EQ(call.path.find(value), std::string::npos);
      }
    }
    for (const auto& [key, bytes] : s3_.s3().objects(kBucket)) {
      for (const auto& value : {db_, session_, later_}) {
        if (!value.empty()) EXPECT_EQ(bytes.find(value), std::string::npos) << key;
      }
    }
  }

  NatsServer server_;
  TempDir data_{"orgd-r2-backup"};
  FakeCloudflareServer cf_;
  FakeS3Server s3_;
  std::unique_ptr<Daemon> daemon_;
  testing::NatsConnectionPtr client_;
  std::unique_ptr<testing::Collector> events_;
  std::string db_, session_, later_;
};

TEST_F(R2BackupTest, ABackupToR2IsRestoredFromItsKey) {
  start("{interval: 24h, keep: 5, r2: {bucket: acme-backups}}");
  ASSERT_TRUE(wait_until([&] { return worker_has("DATABASE_URL", db_); }, 30s));
  // The first scheduled backup runs at start; the API's may fall in the same second, and then
  // gets a name of its own.
  ASSERT_TRUE(wait_until([&] { return backups_in_bucket("orgd/backups/").size() == 1; }, 30s));

  v1::SecretBackupRequest request;
  request.set_to_store(true);
  request.set_actor("test");
  const auto reply = call("secrets.backup", encode(request, Encoding::json));
  ASSERT_FALSE(reply.error_code) << reply.data;
  v1::SecretBackupReply backup;
  ASSERT_TRUE(decode(reply.data, Encoding::json, backup, 1 << 22).ok());
  EXPECT_TRUE(backup.backup().empty()) << "the bytes stay in orgd";
  EXPECT_EQ(backup.secrets(), 2);
  EXPECT_EQ(backup.store(), "r2 acme-backups/orgd/backups/");
  ASSERT_THAT(backup.store_key(), ::testing::StartsWith("orgd-vault-"));
  const auto objects = s3_.s3().objects(kBucket);
  ASSERT_EQ(objects.count("orgd/backups/" + backup.store_key()), 1u);

  // Listed for operators.
  v1::SecretBackupRequest list;
  list.set_list_store(true);
  const auto listed_reply = call("secrets.backup", encode(list, Encoding::json));
  ASSERT_FALSE(listed_reply.error_code) << listed_reply.data;
  v1::SecretBackupReply listed;
  ASSERT_TRUE(decode(listed_reply.data, Encoding::json, listed, 1 << 22).ok());
  ASSERT_EQ(listed.stored_size(), 2);
  const auto found = std::find_if(listed.stored().begin(), listed.stored().end(),
                                  [&](const auto& b) { return b.key() == backup.store_key(); });
  ASSERT_NE(found, listed.stored().end());
  EXPECT_EQ(found->size(),
            static_cast<std::int64_t>(objects.at("orgd/backups/" + backup.store_key()).size()));
  EXPECT_TRUE(found->has_modified());

  // The vault changes after the backup; the restore from R2 brings the value back.
  later_ = canary("db-later");
  ASSERT_FALSE(set_secret("DATABASE_URL", later_).error_code);
  ASSERT_TRUE(wait_until([&] { return worker_has("DATABASE_URL", later_); }, 30s));
  s3_.s3().clear_calls();
  v1::SecretRestoreRequest restore;
  restore.set_store_key(backup.store_key());
  restore.set_actor("test");
  restore.set_request_id("r2-restore-1");
  const auto restored_reply = call("secrets.restore", encode(restore, Encoding::json));
  ASSERT_FALSE(restored_reply.error_code) << restored_reply.data;
  v1::SecretRestoreReply restored;
  ASSERT_TRUE(decode(restored_reply.data, Encoding::json, restored, 1 << 20).ok());
  EXPECT_EQ(restored.restored(), 1);
  EXPECT_EQ(restored.unchanged(), 1);
  ASSERT_TRUE(wait_until([&] { return worker_has("DATABASE_URL", db_); }, 30s))
      << "the restored value is pushed again";
  ASSERT_EQ(s3_.s3().count("GET"), 1u) << "orgd fetched the object itself";

  // A key that is not there is 404; both a key and bytes is refused.
  restore.set_store_key("orgd-vault-19990101T000000Z.bak");
  const auto missing = call("secrets.restore", encode(restore, Encoding::json));
  ASSERT_TRUE(missing.error_code.has_value());
  EXPECT_EQ(*missing.error_code, "404");
  EXPECT_THAT(missing.data, HasSubstr("NoSuchKey"));
  restore.set_backup("bytes");
  const auto both = call("secrets.restore", encode(restore, Encoding::json));
  ASSERT_TRUE(both.error_code.has_value());
  EXPECT_EQ(*both.error_code, "400");

  for (const auto& call : s3_.s3().calls()) EXPECT_NE(call.code, "SignatureDoesNotMatch");
  expect_values_never_in_clear();
  for (const auto& m : events_->messages()) {
    EXPECT_EQ(m.data.find(db_), std::string::npos);
    EXPECT_EQ(m.data.find(kCfToken), std::string::npos);
  }
}

TEST_F(R2BackupTest, ScheduledBackupsArePrunedToKeepInTheBucket) {
  s3_.s3().add_bucket(kBucket);
  s3_.s3().put_object(kBucket, "acme/notes.txt", "not a backup");
  s3_.s3().put_object(kBucket, "elsewhere/orgd-vault-20200101T000000Z.bak", "outside the prefix");
  start("{interval: 1s, keep: 2, r2: {bucket: acme-backups, prefix: acme/}}");
  ASSERT_TRUE(wait_until(
      [&] { return s3_.s3().count("PUT") >= 4 && backups_in_bucket("acme/").size() == 2; }, 60s))
      << "PUTs: " << s3_.s3().count("PUT") << ", backups: " << backups_in_bucket("acme/").size();
  const auto objects = s3_.s3().objects(kBucket);
  EXPECT_EQ(objects.count("acme/notes.txt"), 1u) << "other objects are left alone";
  EXPECT_EQ(objects.count("elsewhere/orgd-vault-20200101T000000Z.bak"), 1u);
  EXPECT_GE(s3_.s3().count("DELETE"), 2u);
  // The bucket existed: the create answered 409 and that was fine.
  EXPECT_GE(cf_.cloudflare().count("POST /accounts/{account_id}/r2/buckets"), 1u);
  EXPECT_FALSE(std::filesystem::exists(data_.path() / "backups")) << "no dir: the store only";
  expect_values_never_in_clear();
}

TEST_F(R2BackupTest, AFailedUploadIsAnEventAndIsTriedAgainAtTheNextInterval) {
  s3_.s3().add_bucket(kBucket);
  s3_.s3().set_read_only(true);
  start("{interval: 1s, keep: 3, r2: {bucket: acme-backups}}");
  auto failed_event = [&] {
    for (const auto& m : events_->messages()) {
      v1::SecretEvent e;
      if (!decode(m.data, Encoding::json, e, 1 << 20).ok()) continue;
      if (e.kind() == "backup" && e.result() == "failed" &&
          e.error().find("AccessDenied") != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  ASSERT_TRUE(wait_until(failed_event, 30s)) << "no failed backup event";
  EXPECT_TRUE(backups_in_bucket("orgd/backups/").empty());
  s3_.s3().set_read_only(false);
  ASSERT_TRUE(wait_until([&] { return !backups_in_bucket("orgd/backups/").empty(); }, 30s))
      << "the next interval's try succeeds";
  EXPECT_TRUE(daemon_->ready());
  for (const auto& m : events_->messages()) {
    EXPECT_EQ(m.data.find(kCfToken), std::string::npos);
    EXPECT_EQ(m.data.find(testing::fake_sha256_hex(kCfToken)), std::string::npos);
  }
}

}  // namespace
}  // namespace orgd
