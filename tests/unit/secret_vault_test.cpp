// The vault over a MemoryKvBucket: ciphertext only in KV, entries bound to their name, scope,
// version and key, versions with history, scopes, rotation helpers, master-key rotation (also
// interrupted), the sealed intake, racing replicas.
#include "daemon/secrets/secret_vault.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/secret_source.hpp"

namespace orgd::secrets {
namespace {

constexpr const char* kCanary = "CANARY-vault-9f31d2";

Secret canary(int i = 0) { return Secret::from(std::string(kCanary) + "-" + std::to_string(i)); }

// A KvBucket that forwards to another and can be told to fail after N more writes (a crash
// mid-way through a multi-record operation).
class FailingBucket final : public KvBucket {
 public:
  explicit FailingBucket(std::shared_ptr<KvBucket> inner) : inner_(std::move(inner)) {}
  const std::string& name() const override { return inner_->name(); }
  Result<std::optional<KvEntry>> get(const std::string& key) override { return inner_->get(key); }
  Result<std::uint64_t> create(const std::string& key, const std::string& value) override {
    if (!allow()) return unavailable("injected");
    return inner_->create(key, value);
  }
  Result<std::uint64_t> update(const std::string& key, const std::string& value,
                               std::uint64_t last_revision) override {
    if (!allow()) return unavailable("injected");
    return inner_->update(key, value, last_revision);
  }
  Result<std::uint64_t> put(const std::string& key, const std::string& value) override {
    if (!allow()) return unavailable("injected");
    return inner_->put(key, value);
  }
  Result<Ok> remove(const std::string& key) override {
    if (!allow()) return unavailable("injected");
    return inner_->remove(key);
  }
  Result<std::vector<std::string>> keys(const std::string& filter) override {
    return inner_->keys(filter);
  }
  Result<std::vector<KvEntry>> entries(const std::string& filter) override {
    return inner_->entries(filter);
  }
  void fail_after(int writes) { budget_ = writes; }

 private:
  bool allow() { return budget_ < 0 || budget_-- > 0; }
  std::shared_ptr<KvBucket> inner_;
  std::atomic<int> budget_{-1};
};

class SecretVaultTest : public ::testing::Test {
 protected:
  SecretVaultTest() {
    auto bucket = store_.open(vault_bucket_spec());
    EXPECT_TRUE(bucket) << bucket.error().message;
    bucket_ = std::move(bucket.value());
  }

  std::unique_ptr<SecretVault> open(const MasterKey& key, const MasterKey* previous = nullptr,
                                    VaultOptions options = {}) {
    std::optional<MasterKey> prev;
    if (previous != nullptr) prev = previous->clone();
    auto vault = SecretVault::open(bucket_, key.clone(), std::move(prev), clock_, options);
    EXPECT_TRUE(vault) << vault.error().message;
    return vault ? std::move(vault.value()) : nullptr;
  }

  // Every stored byte of the bucket, to look for values in clear.
  std::string everything_stored() {
    std::string all;
    auto keys = bucket_->keys(">");
    EXPECT_TRUE(keys);
    for (const auto& key : keys.value()) {
      auto entry = bucket_->get(key);
      if (entry && entry.value()) all += key + "=" + entry.value()->value + "\n";
    }
    return all;
  }

  ManualClock clock_;
  MemoryKvStore store_{clock_};
  std::shared_ptr<KvBucket> bucket_;
  MasterKey key_ = MasterKey::generate();
};

TEST_F(SecretVaultTest, SetThenGetAndOnlyCiphertextIsStored) {
  auto vault = open(key_);
  auto set = vault->set("org", "DATABASE_URL", canary(), "set");
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set.value().version, 1u);
  EXPECT_FALSE(set.value().unchanged);
  auto value = vault->get("org", "DATABASE_URL");
  ASSERT_TRUE(value) << value.error().message;
  EXPECT_TRUE(value.value().equals(canary()));
  const std::string stored = everything_stored();
  EXPECT_EQ(stored.find("CANARY"), std::string::npos) << stored;
  EXPECT_NE(stored.find("head.org.DATABASE_URL="), std::string::npos);
  EXPECT_NE(stored.find("value.org.DATABASE_URL.1="), std::string::npos);
  EXPECT_NE(stored.find("\"kid\":\"" + key_.key_id() + "\""), std::string::npos);
}

TEST_F(SecretVaultTest, SameValueIsUnchangedAndMakesNoVersion) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  const auto before = vault->change_count();
  auto again = vault->set("org", "A", canary(1), "import");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again.value().unchanged);
  EXPECT_EQ(again.value().version, 1u);
  EXPECT_EQ(vault->change_count(), before);
  auto changed = vault->set("org", "A", canary(2), "set");
  ASSERT_TRUE(changed);
  EXPECT_EQ(changed.value().version, 2u);
  auto history = vault->history("org", "A");
  ASSERT_TRUE(history);
  ASSERT_EQ(history.value().size(), 2u);
  EXPECT_EQ(history.value()[0].source, "set");
  EXPECT_TRUE(vault->get("org", "A", 1).value().equals(canary(1)));
  EXPECT_TRUE(vault->get("org", "A").value().equals(canary(2)));
}

TEST_F(SecretVaultTest, KeepsTheLastVersionsAndTheActiveOne) {
  VaultOptions options;
  options.keep_versions = 3;
  auto vault = open(key_, nullptr, options);
  for (int i = 1; i <= 6; ++i) ASSERT_TRUE(vault->set("org", "A", canary(i), "set"));
  auto head = vault->head("org", "A");
  ASSERT_TRUE(head);
  std::vector<std::uint64_t> versions;
  for (const auto& v : head.value().versions) versions.push_back(v.version);
  EXPECT_EQ(versions, (std::vector<std::uint64_t>{4, 5, 6}));
  auto old = vault->get("org", "A", 2);
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().code, ErrorCode::not_found);
  EXPECT_EQ(everything_stored().find("value.org.A.2="), std::string::npos);
  // An old active version survives pruning.
  ASSERT_TRUE(vault->activate("org", "A", 4));
  for (int i = 7; i <= 9; ++i) ASSERT_TRUE(vault->put_pending("org", "A", canary(i)));
  head = vault->head("org", "A");
  versions.clear();
  for (const auto& v : head.value().versions) versions.push_back(v.version);
  EXPECT_EQ(versions, (std::vector<std::uint64_t>{4, 7, 8, 9}));
  EXPECT_TRUE(vault->get("org", "A").value().equals(canary(4)));
}

TEST_F(SecretVaultTest, RepoScopeOverridesOrg) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "TOKEN", canary(1), "set"));
  auto resolved = vault->resolve("api", "TOKEN");
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved.value().scope, "org");
  EXPECT_TRUE(resolved.value().value.equals(canary(1)));
  ASSERT_TRUE(vault->set("api", "TOKEN", canary(2), "set"));
  resolved = vault->resolve("api", "TOKEN");
  ASSERT_TRUE(resolved);
  EXPECT_EQ(resolved.value().scope, "api");
  EXPECT_TRUE(resolved.value().value.equals(canary(2)));
  EXPECT_TRUE(vault->resolve("web", "TOKEN").value().value.equals(canary(1)));
  auto missing = vault->resolve("api", "NOPE");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
}

TEST_F(SecretVaultTest, RecordMovedToAnotherNameOrVersionDoesNotOpen) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  ASSERT_TRUE(vault->set("org", "A", canary(2), "set"));
  ASSERT_TRUE(vault->set("org", "B", canary(3), "set"));
  // Replay: version 1's record written over version 2's.
  const auto v1 = bucket_->get("value.org.A.1").value()->value;
  ASSERT_TRUE(bucket_->put("value.org.A.2", v1));
  auto replayed = vault->get("org", "A");
  ASSERT_FALSE(replayed);
  EXPECT_EQ(replayed.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(replayed.error().message.find("value.org.A.2"), std::string::npos);
  EXPECT_EQ(replayed.error().message.find("CANARY"), std::string::npos);
  // Swap: A's record under B's name.
  ASSERT_TRUE(bucket_->put("value.org.B.1", v1));
  EXPECT_FALSE(vault->get("org", "B"));
  // Scope: the org's record copied to a repo's scope.
  ASSERT_TRUE(vault->set("api", "A", canary(4), "set"));
  ASSERT_TRUE(bucket_->put("value.api.A.1", v1));
  EXPECT_FALSE(vault->get("api", "A"));
}

TEST_F(SecretVaultTest, TamperedRecordIsAnErrorNeverGarbage) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  const std::string record = bucket_->get("value.org.A.1").value()->value;
  const auto ct_at = record.find("\"ct\":\"") + 6;
  for (std::size_t offset : {ct_at, ct_at + 5, record.size() - 4}) {
    std::string tampered = record;
    tampered[offset] = tampered[offset] == 'A' ? 'B' : 'A';
    ASSERT_TRUE(bucket_->put("value.org.A.1", tampered));
    auto value = vault->get("org", "A");
    ASSERT_FALSE(value) << "offset " << offset;
    EXPECT_EQ(value.error().code, ErrorCode::invalid_argument);
  }
  ASSERT_TRUE(bucket_->put("value.org.A.1", "not json"));
  EXPECT_FALSE(vault->get("org", "A"));
  // A key id changed in the record: the binding to the key id fails too.
  std::string relabelled = record;
  const auto kid_at = relabelled.find(key_.key_id());
  relabelled[kid_at] = relabelled[kid_at] == '0' ? '1' : '0';
  ASSERT_TRUE(bucket_->put("value.org.A.1", relabelled));
  EXPECT_FALSE(vault->get("org", "A"));
}

TEST_F(SecretVaultTest, RemovedSecretsOldRecordsNeverOpenAgain) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  const std::string old = bucket_->get("value.org.A.1").value()->value;
  ASSERT_TRUE(vault->remove("org", "A"));
  EXPECT_EQ(vault->get("org", "A").error().code, ErrorCode::not_found);
  EXPECT_TRUE(everything_stored().find("org.A") == std::string::npos);
  ASSERT_TRUE(vault->set("org", "A", canary(2), "set"));
  ASSERT_TRUE(bucket_->put("value.org.A.1", old));
  EXPECT_FALSE(vault->get("org", "A"));  // a new generation
}

TEST_F(SecretVaultTest, OpeningUnderAnotherKeyIsRefused) {
  {
    auto vault = open(key_);
    ASSERT_TRUE(vault->set("org", "A", canary(), "set"));
  }
  const MasterKey other = MasterKey::generate();
  auto wrong = SecretVault::open(bucket_, other.clone(), std::nullopt, clock_);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(wrong.error().message.find(key_.key_id()), std::string::npos);
  EXPECT_NE(wrong.error().message.find(other.key_id()), std::string::npos);
}

TEST_F(SecretVaultTest, WrongPassphraseIsRefusedBeforeAnythingIsWritten) {
  SecretsConfig config;
  config.passphrase_env = "ORGD_PASSPHRASE";
  auto load = [&](const char* passphrase) {
    const SecretSource source(
        Environment(std::map<std::string, std::string>{{"ORGD_PASSPHRASE", passphrase}}));
    auto key = load_master_key(config, source, *bucket_, KdfCost::minimal());
    EXPECT_TRUE(key) << key.error().message;
    return std::move(key.value());
  };
  {
    auto vault = open(load("the right one"));
    ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  }
  const std::string before = everything_stored();
  auto wrong = SecretVault::open(bucket_, load("the wrong one"), std::nullopt, clock_);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(wrong.error().message.find("wrong passphrase"), std::string::npos);
  EXPECT_EQ(everything_stored(), before);
  auto right = open(load("the right one"));
  ASSERT_TRUE(right);
  EXPECT_TRUE(right->get("org", "A").value().equals(canary(1)));
}

TEST_F(SecretVaultTest, PendingThenActivateThenRetire) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "S", canary(1), "set"));
  auto pending = vault->put_pending("org", "S", canary(2));
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending.value(), 2u);
  EXPECT_TRUE(vault->get("org", "S").value().equals(canary(1)));
  auto head = vault->head("org", "S").value();
  EXPECT_EQ(head.active, 1u);
  EXPECT_EQ(head.pending, 2u);
  EXPECT_EQ(head.versions.back().source, "rotate");
  EXPECT_TRUE(vault->get("org", "S", 2).value().equals(canary(2)));
  auto retire_pending = vault->retire("org", "S", 2);
  ASSERT_FALSE(retire_pending);
  EXPECT_EQ(retire_pending.error().code, ErrorCode::invalid_argument);

  ASSERT_TRUE(vault->activate("org", "S", 2));
  head = vault->head("org", "S").value();
  EXPECT_EQ(head.active, 2u);
  EXPECT_EQ(head.pending, 0u);
  EXPECT_TRUE(vault->get("org", "S").value().equals(canary(2)));
  EXPECT_FALSE(vault->retire("org", "S", 2));
  ASSERT_TRUE(vault->retire("org", "S", 1));
  EXPECT_EQ(vault->get("org", "S", 1).error().code, ErrorCode::not_found);
  EXPECT_EQ(everything_stored().find("value.org.S.1="), std::string::npos);
  EXPECT_EQ(vault->activate("org", "S", 1).error().code, ErrorCode::not_found);
}

TEST_F(SecretVaultTest, ListShowsMetadataNeverValues) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "B", canary(1), "import"));
  clock_.advance(std::chrono::hours{1});
  ASSERT_TRUE(vault->set("api", "A", canary(2), "set"));
  ASSERT_TRUE(vault->set("org", "A", canary(3), "set"));
  auto list = vault->list();
  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list.value().size(), 3u);
  EXPECT_EQ(list.value()[0].scope, "api");
  EXPECT_EQ(list.value()[1].scope + "/" + list.value()[1].name, "org/A");
  EXPECT_EQ(list.value()[2].name, "B");
  EXPECT_EQ(list.value()[2].versions.at(0).source, "import");
  EXPECT_EQ(clock_.now() - list.value()[2].created, std::chrono::hours{1});
}

TEST_F(SecretVaultTest, NamesAndScopesAreCheckedAndEscaped) {
  auto vault = open(key_);
  EXPECT_EQ(vault->set("org", "", canary(), "set").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(vault->set("org", "A B", canary(), "set").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(vault->set("", "A", canary(), "set").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(vault->set("org", "A", Secret{}, "set").error().code, ErrorCode::invalid_argument);
  // A repo named with a dot stays one KV token; it does not collide with another split.
  ASSERT_TRUE(vault->set("acme.github.io", "A", canary(1), "set"));
  ASSERT_TRUE(vault->set("acme", "github.io.A", canary(2), "set"));
  EXPECT_TRUE(vault->get("acme.github.io", "A").value().equals(canary(1)));
  EXPECT_TRUE(vault->get("acme", "github.io.A").value().equals(canary(2)));
  EXPECT_EQ(kv_token("a.b"), "a=2Eb");
}

TEST_F(SecretVaultTest, SealedIntakeOpensWhatIsSealedToThePublicKey) {
  auto vault = open(key_);
  const std::string pk = vault->public_key();
  ASSERT_EQ(pk.size(), 32u);
  auto sealed = seal_to(pk, canary(7));
  ASSERT_TRUE(sealed);
  auto opened = vault->open_sealed(sealed.value());
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_TRUE(opened.value().equals(canary(7)));
  std::string tampered = sealed.value();
  tampered[40] ^= 1;
  EXPECT_EQ(vault->open_sealed(tampered).error().code, ErrorCode::invalid_argument);
  auto other = seal_to(MasterKey::generate().intake_public_key(), canary(7));
  EXPECT_FALSE(vault->open_sealed(other.value()));
  EXPECT_FALSE(vault->open_sealed("short"));
  EXPECT_TRUE(vault->digest_key().equals(key_.digest_key()));
}

TEST_F(SecretVaultTest, RotateMasterKeyReencryptsEverything) {
  auto vault = open(key_);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(vault->set(i % 2 ? "org" : "api", "S" + std::to_string(i), canary(i), "set"));
  }
  ASSERT_TRUE(vault->set("org", "S1", canary(100), "set"));  // two versions
  const MasterKey next = MasterKey::generate();
  auto rotated = vault->rotate_master_key(next.clone());
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(rotated.value(), 21u);
  EXPECT_EQ(vault->key_id(), next.key_id());
  EXPECT_EQ(everything_stored().find(key_.key_id()), std::string::npos);
  EXPECT_TRUE(vault->get("org", "S1", 1).value().equals(canary(1)));
  // A fresh replica: the new key opens; the old one is refused.
  auto reopened = open(next);
  ASSERT_TRUE(reopened);
  EXPECT_TRUE(reopened->get("org", "S1").value().equals(canary(100)));
  EXPECT_TRUE(reopened->get("api", "S0").value().equals(canary(0)));
  EXPECT_FALSE(SecretVault::open(bucket_, key_.clone(), std::nullopt, clock_));
}

TEST_F(SecretVaultTest, WritesDuringARotationEndUpUnderTheNewKey) {
  auto vault = open(key_);
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(vault->set("org", "S" + std::to_string(i), canary(i), "set"));
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load() || i < 20; ++i) {
      if (vault->set("org", "W" + std::to_string(i % 10), canary(500 + i), "set")) ++written;
    }
  });
  const MasterKey next = MasterKey::generate();
  auto rotated = vault->rotate_master_key(next.clone());
  stop = true;
  writer.join();
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_GE(written.load(), 20);
  EXPECT_EQ(everything_stored().find(key_.key_id()), std::string::npos);
  auto fresh = open(next);
  ASSERT_TRUE(fresh);
  auto heads = fresh->list();
  ASSERT_TRUE(heads);
  for (const auto& head : heads.value()) {
    for (const auto& v : head.versions) {
      EXPECT_TRUE(fresh->get(head.scope, head.name, v.version)) << head.name << " " << v.version;
    }
  }
}

TEST_F(SecretVaultTest, InterruptedMasterKeyRotationFinishesWithBothKeys) {
  auto failing = std::make_shared<FailingBucket>(bucket_);
  auto opened = SecretVault::open(failing, key_.clone(), std::nullopt, clock_);
  ASSERT_TRUE(opened);
  auto vault = std::move(opened.value());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(vault->set("org", "S" + std::to_string(i), canary(i), "set"));
  const MasterKey next = MasterKey::generate();
  failing->fail_after(5);  // meta.key and four records, then "the process dies"
  ASSERT_FALSE(vault->rotate_master_key(next.clone()));
  const std::string stored = everything_stored();
  EXPECT_NE(stored.find(key_.key_id()), std::string::npos);
  EXPECT_NE(stored.find(next.key_id()), std::string::npos);

  // Neither key alone is the vault's now.
  EXPECT_FALSE(SecretVault::open(bucket_, key_.clone(), std::nullopt, clock_));
  auto new_only = SecretVault::open(bucket_, next.clone(), std::nullopt, clock_);
  ASSERT_TRUE(new_only);
  EXPECT_TRUE(new_only.value()->get("org", "S0").value().equals(canary(0)));
  EXPECT_FALSE(new_only.value()->get("org", "S9"));  // still under the old key

  auto resumed = open(next, &key_);
  ASSERT_TRUE(resumed);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(resumed->get("org", "S" + std::to_string(i)).value().equals(canary(i)));
  }
  auto finished = resumed->rotate_master_key(next.clone());
  ASSERT_TRUE(finished) << finished.error().message;
  EXPECT_EQ(finished.value(), 6u);
  EXPECT_EQ(everything_stored().find(key_.key_id()), std::string::npos);
  auto fresh = open(next);
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->get("org", "S9").value().equals(canary(9)));
}

TEST_F(SecretVaultTest, OpeningWithNewAndOldKeyStartsTheRotation) {
  {
    auto vault = open(key_);
    ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  }
  const MasterKey next = MasterKey::generate();
  auto vault = open(next, &key_);
  ASSERT_TRUE(vault);
  EXPECT_TRUE(vault->get("org", "A").value().equals(canary(1)));
  ASSERT_TRUE(vault->set("org", "B", canary(2), "set"));  // written under the new key
  EXPECT_FALSE(SecretVault::open(bucket_, key_.clone(), std::nullopt, clock_));
  ASSERT_TRUE(vault->rotate_master_key(next.clone()));
  EXPECT_EQ(everything_stored().find(key_.key_id()), std::string::npos);
}

TEST_F(SecretVaultTest, RacingReplicasProduceOneConsistentHistory) {
  auto a = open(key_);
  auto b = open(key_);
  constexpr int kPerReplica = 15;
  std::atomic<int> failures{0};
  auto writer = [&](SecretVault* vault, int base) {
    for (int i = 0; i < kPerReplica; ++i) {
      if (!vault->set("org", "RACE", canary(base + i), "set")) ++failures;
    }
  };
  std::thread ta(writer, a.get(), 0);
  std::thread tb(writer, b.get(), 1000);
  ta.join();
  tb.join();
  EXPECT_EQ(failures.load(), 0);
  auto head = a->head("org", "RACE");
  ASSERT_TRUE(head);
  EXPECT_EQ(head.value().latest, 2u * kPerReplica);
  EXPECT_EQ(head.value().active, 2u * kPerReplica);
  std::set<std::uint64_t> versions;
  for (const auto& v : head.value().versions) versions.insert(v.version);
  EXPECT_EQ(versions.size(), head.value().versions.size());
  EXPECT_TRUE(a->get("org", "RACE"));  // the active one opens
  for (const auto& v : head.value().versions) EXPECT_TRUE(b->get("org", "RACE", v.version));
}

TEST_F(SecretVaultTest, ChangeHookSeesEveryChange) {
  auto vault = open(key_);
  std::vector<std::string> seen;
  vault->on_change([&](const VaultChange& c) {
    seen.push_back(c.action + ":" + c.scope + ":" + c.name + ":" + std::to_string(c.version));
  });
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));  // unchanged: no event
  ASSERT_TRUE(vault->put_pending("org", "A", canary(2)));
  ASSERT_TRUE(vault->activate("org", "A", 2));
  ASSERT_TRUE(vault->retire("org", "A", 1));
  ASSERT_TRUE(vault->remove("org", "A"));
  EXPECT_EQ(seen, (std::vector<std::string>{"set:org:A:1", "pending:org:A:2", "activate:org:A:2",
                                            "retire:org:A:1", "remove:org:A:0"}));
  EXPECT_EQ(vault->change_count(), 5u);
}

TEST_F(SecretVaultTest, RepoSecretsResolveConfiguredNames) {
  std::shared_ptr<SecretVault> vault = open(key_);
  ASSERT_TRUE(vault->set("org", "SHARED", canary(1), "set"));
  ASSERT_TRUE(vault->set("api", "OWN", canary(2), "set"));
  ASSERT_TRUE(vault->set("api", "SHARED", canary(3), "set"));
  VaultRepoSecrets repo_secrets(vault, {{"api", {"SHARED", "OWN"}}, {"web", {"SHARED", "GONE"}}});
  auto api = repo_secrets.secrets_for("api");
  ASSERT_TRUE(api) << api.error().message;
  ASSERT_EQ(api.value().size(), 2u);
  EXPECT_EQ(api.value()[0].name, "SHARED");
  EXPECT_TRUE(api.value()[0].value.equals(canary(3)));
  EXPECT_TRUE(api.value()[1].value.equals(canary(2)));
  auto web = repo_secrets.secrets_for("web");
  ASSERT_FALSE(web);
  EXPECT_EQ(web.error().code, ErrorCode::not_found);
  EXPECT_NE(web.error().message.find("GONE"), std::string::npos);
  auto none = repo_secrets.secrets_for("docs");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none.value().empty());

  std::map<std::string, RepoConfig> repos;
  repos["api"].secrets = {"OWN"};
  repos["docs"];
  VaultRepoSecrets from_config(vault, repos);
  auto own = from_config.secrets_for("api");
  ASSERT_TRUE(own) << own.error().message;
  ASSERT_EQ(own.value().size(), 1u);
  EXPECT_EQ(own.value()[0].name, "OWN");
  EXPECT_TRUE(from_config.secrets_for("docs").value().empty());
}

TEST_F(SecretVaultTest, UnavailableKvIsReportedAsUnavailable) {
  auto vault = open(key_);
  ASSERT_TRUE(vault->set("org", "A", canary(1), "set"));
  store_.set_unavailable(true);
  EXPECT_EQ(vault->get("org", "A").error().code, ErrorCode::unavailable);
  EXPECT_EQ(vault->set("org", "A", canary(2), "set").error().code, ErrorCode::unavailable);
  EXPECT_EQ(vault->list().error().code, ErrorCode::unavailable);
}

}  // namespace
}  // namespace orgd::secrets
