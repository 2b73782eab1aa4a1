// The vault's master key: base64 from a file or an env var, or a passphrase through Argon2id
// with its salt kept in the vault bucket; subkeys per use; errors that never quote the key.
#include "daemon/secrets/master_key.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/secrets/secret_vault.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::secrets {
namespace {

// 32 bytes "0123456789abcdef0123456789abcdef", base64.
constexpr const char* kKeyBase64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

class MasterKeyTest : public ::testing::Test {
 protected:
  std::shared_ptr<KvBucket> open_bucket() {
    auto bucket = store_.open(vault_bucket_spec());
    EXPECT_TRUE(bucket) << bucket.error().message;
    return std::move(bucket.value());
  }
  ManualClock clock_;
  MemoryKvStore store_{clock_};
};

TEST_F(MasterKeyTest, Base64KeyWithTrailingNewlineLoads) {
  auto key = MasterKey::from_base64(Secret::from(std::string(kKeyBase64) + "\n"), "file k");
  ASSERT_TRUE(key) << key.error().message;
  EXPECT_EQ(key.value().raw().expose(), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(key.value().key_id().size(), 16u);
  auto again = MasterKey::from_base64(Secret::from(std::string("  ") + kKeyBase64 + " \r\n"), "x");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again.value().key_id(), key.value().key_id());
}

TEST_F(MasterKeyTest, WrongLengthAndNotBase64AreRefusedWithoutTheContent) {
  // 31 bytes of key material.
  const std::string short_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZQ==";
  auto short_result = MasterKey::from_base64(Secret::from(short_key), "file /etc/orgd/master.key");
  ASSERT_FALSE(short_result);
  EXPECT_EQ(short_result.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(short_result.error().message,
            "the master key in file /etc/orgd/master.key decodes to 31 bytes, not 32");

  const std::string canary = "CANARY-not-base64-$$$";
  auto bad = MasterKey::from_base64(Secret::from(canary), "environment variable K");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(bad.error().message.find("environment variable K is not base64"), std::string::npos);
  EXPECT_EQ(bad.error().message.find("CANARY"), std::string::npos);

  EXPECT_FALSE(MasterKey::from_base64(Secret::from(""), "x"));
  EXPECT_FALSE(MasterKey::from_raw(Secret::from("short")));
}

TEST_F(MasterKeyTest, SubkeysDifferPerUseAndPerKey) {
  const MasterKey a = MasterKey::generate();
  const MasterKey b = MasterKey::generate();
  EXPECT_NE(a.key_id(), b.key_id());
  const Secret& entry = a.entry_key();
  const Secret digest = a.digest_key();
  const Secret backup = a.backup_key();
  EXPECT_EQ(entry.size(), 32u);
  EXPECT_EQ(digest.size(), 32u);
  EXPECT_FALSE(entry.equals(digest));
  EXPECT_FALSE(entry.equals(backup));
  EXPECT_FALSE(digest.equals(backup));
  EXPECT_FALSE(entry.equals(a.raw()));
  EXPECT_FALSE(entry.equals(b.entry_key()));
  // Deterministic: the same key derives the same subkeys.
  EXPECT_TRUE(a.clone().entry_key().equals(entry));
  EXPECT_EQ(a.clone().key_id(), a.key_id());
  // The intake keypair opens what is sealed to its public key.
  const std::string pk = a.intake_public_key();
  ASSERT_EQ(pk.size(), 32u);
  EXPECT_NE(pk, b.intake_public_key());
  auto sealed = seal_to(pk, Secret::from("value"));
  ASSERT_TRUE(sealed);
  const Secret sk = a.intake_secret_key();
  unsigned char out[5];
  ASSERT_EQ(
      crypto_box_seal_open(out, reinterpret_cast<const unsigned char*>(sealed.value().data()),
                           sealed.value().size(), reinterpret_cast<const unsigned char*>(pk.data()),
                           reinterpret_cast<const unsigned char*>(sk.expose().data())),
      0);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(out), 5), "value");
}

TEST_F(MasterKeyTest, PassphraseDependsOnPassphraseAndSalt) {
  const KdfParams params = new_kdf_params(KdfCost::minimal());
  auto a = MasterKey::from_passphrase(Secret::from("correct horse"), params);
  auto b = MasterKey::from_passphrase(Secret::from("correct horse"), params);
  auto c = MasterKey::from_passphrase(Secret::from("correct horsf"), params);
  auto d =
      MasterKey::from_passphrase(Secret::from("correct horse"), new_kdf_params(KdfCost::minimal()));
  ASSERT_TRUE(a && b && c && d);
  EXPECT_EQ(a.value().key_id(), b.value().key_id());
  EXPECT_NE(a.value().key_id(), c.value().key_id());
  EXPECT_NE(a.value().key_id(), d.value().key_id());
  EXPECT_FALSE(MasterKey::from_passphrase(Secret::from(""), params));
  KdfParams bad = params;
  bad.memlimit = 1ULL << 40;
  EXPECT_FALSE(MasterKey::from_passphrase(Secret::from("x"), bad));
}

TEST_F(MasterKeyTest, KdfParamsRoundTripThroughJson) {
  const KdfParams params = new_kdf_params(KdfCost::interactive());
  auto parsed = parse_kdf_params_json(kdf_params_json(params));
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed.value().salt, params.salt);
  EXPECT_EQ(parsed.value().opslimit, params.opslimit);
  EXPECT_EQ(parsed.value().memlimit, params.memlimit);
  EXPECT_FALSE(parse_kdf_params_json("{}"));
  EXPECT_FALSE(parse_kdf_params_json("not json"));
  EXPECT_FALSE(parse_kdf_params_json(
      R"({"alg":"argon2id13","salt":"c2hvcnQ=","opslimit":3,"memlimit":65536})"));
}

TEST_F(MasterKeyTest, LoadsFromFileAndEnvThroughTheSecretSource) {
  testing::TempDir dir;
  testing::write_file(dir / "master.key", std::string(kKeyBase64) + "\n");
  auto bucket = open_bucket();
  SecretsConfig config;
  config.master_key_file = (dir / "master.key").string();
  const SecretSource source(
      Environment(std::map<std::string, std::string>{{"ORGD_MASTER_KEY", kKeyBase64}}));
  auto from_file = load_master_key(config, source, *bucket);
  ASSERT_TRUE(from_file) << from_file.error().message;

  SecretsConfig env_config;
  env_config.master_key_env = "ORGD_MASTER_KEY";
  auto from_env = load_master_key(env_config, source, *bucket);
  ASSERT_TRUE(from_env) << from_env.error().message;
  EXPECT_EQ(from_env.value().key_id(), from_file.value().key_id());

  env_config.master_key_env = "ABSENT";
  auto missing = load_master_key(env_config, source, *bucket);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  // Key files and env vars write nothing to the vault.
  auto keys = bucket->keys(">");
  ASSERT_TRUE(keys);
  EXPECT_TRUE(keys.value().empty());
}

TEST_F(MasterKeyTest, PassphraseSaltIsStoredOnceAndReused) {
  auto bucket = open_bucket();
  SecretsConfig config;
  config.passphrase_env = "ORGD_PASSPHRASE";
  const SecretSource source(
      Environment(std::map<std::string, std::string>{{"ORGD_PASSPHRASE", "hunter2 hunter2"}}));
  auto first = load_master_key(config, source, *bucket, KdfCost::minimal());
  ASSERT_TRUE(first) << first.error().message;
  auto stored = bucket->get(std::string{kKdfKey});
  ASSERT_TRUE(stored && stored.value());
  EXPECT_EQ(stored.value()->value.find("hunter2"), std::string::npos);
  auto second = load_master_key(config, source, *bucket, KdfCost::minimal());
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second.value().key_id(), first.value().key_id());
  auto stored_again = bucket->get(std::string{kKdfKey});
  EXPECT_EQ(stored_again.value()->revision, stored.value()->revision);
}

TEST_F(MasterKeyTest, ReplicasStartingTogetherAgreeOnTheSalt) {
  auto bucket = open_bucket();
  SecretsConfig config;
  config.passphrase_env = "P";
  const SecretSource source(
      Environment(std::map<std::string, std::string>{{"P", "same passphrase"}}));
  constexpr int kReplicas = 4;
  std::vector<std::string> ids(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      auto key = load_master_key(config, source, *bucket, KdfCost::minimal());
      ids[i] = key ? key.value().key_id() : "error: " + key.error().message;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 1; i < kReplicas; ++i) EXPECT_EQ(ids[i], ids[0]);
  EXPECT_EQ(ids[0].size(), 16u) << ids[0];
}

TEST_F(MasterKeyTest, NoSourceConfiguredIsAnError) {
  auto bucket = open_bucket();
  auto key = load_master_key(SecretsConfig{}, SecretSource(Environment{}), *bucket);
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace orgd::secrets
