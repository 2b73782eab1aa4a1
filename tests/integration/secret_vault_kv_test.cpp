// The vault on real JetStream KV: two replicas (two connections) sharing `orgd_vault` see each
// other's values, race on one secret to one history, agree on a passphrase's salt, rotate the
// master key online, and back up and restore; nothing in the bucket is a value in clear.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/secret_source.hpp"
#include "daemon/secrets/master_key.hpp"
#include "daemon/secrets/secret_vault.hpp"
#include "daemon/secrets/vault_backup.hpp"
#include "tests/support/nats_server.hpp"

namespace orgd::secrets {
namespace {

constexpr const char* kCanary = "CANARY-vault-kv-4b9e07";

Secret canary(int i) { return Secret::from(std::string(kCanary) + "-" + std::to_string(i)); }

// One orgd replica's view: its own connection and JetStream context.
class Replica {
 public:
  explicit Replica(const std::string& url) : client_(testing::connect_client(url)) {
    EXPECT_EQ(natsConnection_JetStream(&js_, client_.get(), nullptr), NATS_OK);
    auto bucket = KvBucket::open(js_, vault_bucket_spec());
    EXPECT_TRUE(bucket) << bucket.error().message;
    bucket_ = std::move(bucket.value());
  }
  ~Replica() {
    bucket_.reset();
    jsCtx_Destroy(js_);
  }
  std::shared_ptr<KvBucket> bucket() const { return bucket_; }

  std::unique_ptr<SecretVault> vault(const MasterKey& key, const MasterKey* previous = nullptr) {
    std::optional<MasterKey> prev;
    if (previous != nullptr) prev = previous->clone();
    auto vault = SecretVault::open(bucket_, key.clone(), std::move(prev));
    EXPECT_TRUE(vault) << vault.error().message;
    return vault ? std::move(vault.value()) : nullptr;
  }

 private:
  testing::NatsConnectionPtr client_;
  jsCtx* js_ = nullptr;
  std::shared_ptr<KvBucket> bucket_;
};

class SecretVaultKvTest : public ::testing::Test {
 protected:
  std::string everything_stored() {
    std::string all;
    auto keys = a_.bucket()->keys(">");
    EXPECT_TRUE(keys) << keys.error().message;
    for (const auto& key : keys.value()) {
      auto entry = a_.bucket()->get(key);
      if (entry && entry.value()) all += key + "=" + entry.value()->value + "\n";
    }
    return all;
  }

  testing::NatsServer server_;
  Replica a_{server_.url()};
  Replica b_{server_.url()};
  MasterKey key_ = MasterKey::generate();
};

TEST_F(SecretVaultKvTest, ReplicasShareValuesAndOnlyCiphertextIsStored) {
  auto va = a_.vault(key_);
  auto vb = b_.vault(key_);
  ASSERT_TRUE(va && vb);
  ASSERT_TRUE(va->set("org", "TOKEN", canary(1), "set"));
  ASSERT_TRUE(vb->set("api", "TOKEN", canary(2), "set"));
  EXPECT_TRUE(vb->get("org", "TOKEN").value().equals(canary(1)));
  auto resolved = va->resolve("api", "TOKEN");
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved.value().scope, "api");
  EXPECT_TRUE(resolved.value().value.equals(canary(2)));
  auto unchanged = vb->set("org", "TOKEN", canary(1), "import");
  ASSERT_TRUE(unchanged);
  EXPECT_TRUE(unchanged.value().unchanged);
  auto list = va->list();
  ASSERT_TRUE(list);
  EXPECT_EQ(list.value().size(), 2u);
  EXPECT_EQ(everything_stored().find(kCanary), std::string::npos);
}

TEST_F(SecretVaultKvTest, RacingReplicasProduceOneHistory) {
  auto va = a_.vault(key_);
  auto vb = b_.vault(key_);
  constexpr int kEach = 10;
  std::atomic<int> failures{0};
  auto writer = [&](SecretVault* vault, int base) {
    for (int i = 0; i < kEach; ++i) {
      if (!vault->set("org", "RACE", canary(base + i), "set")) ++failures;
    }
  };
  std::thread ta(writer, va.get(), 0);
  std::thread tb(writer, vb.get(), 100);
  ta.join();
  tb.join();
  EXPECT_EQ(failures.load(), 0);
  auto head = vb->head("org", "RACE");
  ASSERT_TRUE(head);
  EXPECT_EQ(head.value().latest, 2u * kEach);
  EXPECT_EQ(head.value().active, 2u * kEach);
  std::set<std::uint64_t> seen;
  for (const auto& v : head.value().versions) {
    EXPECT_TRUE(seen.insert(v.version).second);
    EXPECT_TRUE(va->get("org", "RACE", v.version)) << v.version;
  }
}

TEST_F(SecretVaultKvTest, ReplicasAgreeOnThePassphraseSalt) {
  SecretsConfig config;
  config.passphrase_env = "ORGD_PASSPHRASE";
  const SecretSource source(
      Environment(std::map<std::string, std::string>{{"ORGD_PASSPHRASE", "a passphrase"}}));
  std::string id_a, id_b;
  std::thread ta([&] {
    auto key = load_master_key(config, source, *a_.bucket(), KdfCost::minimal());
    id_a = key ? key.value().key_id() : key.error().message;
  });
  std::thread tb([&] {
    auto key = load_master_key(config, source, *b_.bucket(), KdfCost::minimal());
    id_b = key ? key.value().key_id() : key.error().message;
  });
  ta.join();
  tb.join();
  EXPECT_EQ(id_a.size(), 16u) << id_a;
  EXPECT_EQ(id_a, id_b);
}

TEST_F(SecretVaultKvTest, MasterKeyRotationOnlineWhileTheOtherReplicaReads) {
  auto va = a_.vault(key_);
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(va->set("org", "S" + std::to_string(i), canary(i), "set"));
  const MasterKey next = MasterKey::generate();
  auto rotated = va->rotate_master_key(next.clone());
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(rotated.value(), 30u);
  EXPECT_EQ(everything_stored().find(key_.key_id()), std::string::npos);
  auto vb = b_.vault(next);
  ASSERT_TRUE(vb);
  for (int i = 0; i < 30; ++i) {
    EXPECT_TRUE(vb->get("org", "S" + std::to_string(i)).value().equals(canary(i)));
  }
  EXPECT_FALSE(SecretVault::open(b_.bucket(), key_.clone()));
}

TEST_F(SecretVaultKvTest, BackupAndRestoreThroughJetStream) {
  auto va = a_.vault(key_);
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(va->set("org", "S" + std::to_string(i), canary(i), "set"));
  const BackupKey key = BackupKey::with_passphrase(Secret::from("backup pass"), KdfCost::minimal());
  auto bytes = make_backup(*va, key, system_clock());
  ASSERT_TRUE(bytes) << bytes.error().message;
  for (int i = 0; i < 50; i += 2) ASSERT_TRUE(va->remove("org", "S" + std::to_string(i)));
  ASSERT_TRUE(va->set("org", "S1", canary(1001), "set"));
  std::string damaged = bytes.value();
  damaged[damaged.size() / 2] ^= 0x20;
  const std::string before = everything_stored();
  EXPECT_FALSE(restore_backup(*va, damaged, key));
  EXPECT_EQ(everything_stored(), before);
  auto vb = b_.vault(key_);
  auto report = restore_backup(*vb, bytes.value(), key);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report.value().restored, 26u);  // 25 removed, S1 changed
  EXPECT_EQ(report.value().unchanged, 24u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(va->get("org", "S" + std::to_string(i)).value().equals(canary(i))) << i;
  }
}

}  // namespace
}  // namespace orgd::secrets
