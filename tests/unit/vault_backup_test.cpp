// Vault backups: a round trip of 1,000 entries; every kind of damage (a byte changed in the
// header, the middle, the last chunk; truncation; trailing bytes), a wrong passphrase and a
// wrong master key refused with the vault unchanged; scheduled files with mode 600 and
// retention.
#include "daemon/secrets/vault_backup.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::secrets {
namespace {

constexpr const char* kCanary = "CANARY-backup-77e1a0";

Secret canary(int i) { return Secret::from(std::string(kCanary) + "-" + std::to_string(i)); }

class VaultBackupTest : public ::testing::Test {
 protected:
  std::unique_ptr<SecretVault> make_vault(MemoryKvStore& store, const MasterKey& key) {
    auto bucket = store.open(vault_bucket_spec());
    EXPECT_TRUE(bucket);
    auto vault = SecretVault::open(std::move(bucket.value()), key.clone(), std::nullopt, clock_);
    EXPECT_TRUE(vault) << vault.error().message;
    return std::move(vault.value());
  }

  // Every key and value of the vault's bucket: "changes nothing" is checked against this.
  static std::string snapshot(SecretVault& vault) {
    std::string all;
    auto keys = vault.bucket().keys(">");
    EXPECT_TRUE(keys);
    for (const auto& key : keys.value()) {
      auto entry = vault.bucket().get(key);
      all +=
          key + "@" + std::to_string(entry.value()->revision) + "=" + entry.value()->value + "\n";
    }
    return all;
  }

  void fill(SecretVault& vault, int count) {
    for (int i = 0; i < count; ++i) {
      const std::string scope = i % 3 == 0 ? "org" : "repo" + std::to_string(i % 7);
      ASSERT_TRUE(vault.set(scope, "SECRET_" + std::to_string(i), canary(i), "set"));
    }
  }

  BackupKey passphrase(const char* p = "backup passphrase") {
    return BackupKey::with_passphrase(Secret::from(p), KdfCost::minimal());
  }

  ManualClock clock_;
  MemoryKvStore source_store_{clock_};
  MemoryKvStore target_store_{clock_};
  MasterKey key_ = MasterKey::generate();
};

TEST_F(VaultBackupTest, RoundTripOfAThousandEntries) {
  auto source = make_vault(source_store_, key_);
  fill(*source, 1000);
  ASSERT_TRUE(source->set("org", "SECRET_0", canary(5000), "set"));  // a second version
  ASSERT_TRUE(source->put_pending("org", "SECRET_3", canary(6000)));

  for (auto* key_kind : {"passphrase", "master key"}) {
    SCOPED_TRACE(key_kind);
    const bool with_passphrase = std::string(key_kind) == "passphrase";
    BackupKey key = with_passphrase ? passphrase() : BackupKey::with_master_key(key_.clone());
    auto bytes = make_backup(*source, key, clock_);
    ASSERT_TRUE(bytes) << bytes.error().message;
    EXPECT_EQ(bytes.value().find(kCanary), std::string::npos);
    EXPECT_EQ(bytes.value().find("SECRET_1"), std::string::npos);  // names are inside too

    auto header = read_backup_header(bytes.value());
    ASSERT_TRUE(header);
    EXPECT_EQ(header.value().format_version, kBackupFormatVersion);
    EXPECT_EQ(header.value().kind,
              with_passphrase ? BackupKeyKind::passphrase : BackupKeyKind::master_key);

    auto contents = read_backup(bytes.value(), key);
    ASSERT_TRUE(contents) << contents.error().message;
    EXPECT_EQ(contents.value().secrets.size(), 1000u);
    EXPECT_EQ(contents.value().vault_key_id, key_.key_id());

    // Into an empty vault under another master key.
    MemoryKvStore target_store{clock_};
    auto target = make_vault(target_store, MasterKey::generate());
    auto report = restore_backup(*target, bytes.value(), key);
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report.value().restored, 1000u);
    for (int i = 0; i < 1000; i += 37) {
      const std::string scope = i % 3 == 0 ? "org" : "repo" + std::to_string(i % 7);
      auto value = target->get(scope, "SECRET_" + std::to_string(i));
      ASSERT_TRUE(value) << i;
      EXPECT_TRUE(value.value().equals(i == 0 ? canary(5000) : canary(i)));
    }
    auto head = target->head("org", "SECRET_0").value();
    EXPECT_EQ(head.versions.back().source, "restore");
    EXPECT_TRUE(target->get("org", "SECRET_3").value().equals(canary(3)));  // not the pending one
    EXPECT_EQ(target->head("org", "SECRET_3").value().pending, 0u);

    // Again: nothing differs, nothing is written.
    const std::string before = snapshot(*target);
    report = restore_backup(*target, bytes.value(), key);
    ASSERT_TRUE(report);
    EXPECT_EQ(report.value().unchanged, 1000u);
    EXPECT_EQ(snapshot(*target), before);
  }
}

TEST_F(VaultBackupTest, MergeKeepsSecretsTheBackupDoesNotHave) {
  auto vault = make_vault(source_store_, key_);
  fill(*vault, 3);
  const BackupKey key = BackupKey::with_master_key(key_.clone());
  auto bytes = make_backup(*vault, key, clock_);
  ASSERT_TRUE(bytes);
  ASSERT_TRUE(vault->set("org", "SECRET_0", canary(100), "set"));
  ASSERT_TRUE(vault->set("org", "NEWER", canary(101), "set"));
  auto report = restore_backup(*vault, bytes.value(), key);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report.value().restored, 1u);
  EXPECT_EQ(report.value().unchanged, 2u);
  auto head = vault->head("org", "SECRET_0").value();
  EXPECT_EQ(head.active, 3u);  // 1 set, 2 changed, 3 restored
  EXPECT_TRUE(vault->get("org", "SECRET_0").value().equals(canary(0)));
  EXPECT_TRUE(vault->get("org", "SECRET_0", 2).value().equals(canary(100)));
  EXPECT_TRUE(vault->get("org", "NEWER").value().equals(canary(101)));
}

class RefusedBackupTest : public VaultBackupTest {
 protected:
  void SetUp() override {
    source_ = make_vault(source_store_, key_);
    fill(*source_, 40);
    bytes_ = make_backup(*source_, BackupKey::with_master_key(key_.clone()), clock_).value();
    pass_bytes_ = make_backup(*source_, passphrase(), clock_).value();
    target_ = make_vault(target_store_, key_);
    ASSERT_TRUE(target_->set("org", "SECRET_0", canary(999), "set"));
    before_ = snapshot(*target_);
  }

  // Refused, with the target unchanged.
  void expect_refused(const std::string& bytes, const BackupKey& key, const std::string& what) {
    auto report = restore_backup(*target_, bytes, key);
    ASSERT_FALSE(report) << what;
    EXPECT_EQ(report.error().code, ErrorCode::invalid_argument) << what;
    EXPECT_EQ(report.error().message.rfind("backup refused: ", 0), 0u) << report.error().message;
    EXPECT_EQ(report.error().message.find(kCanary), std::string::npos);
    EXPECT_EQ(snapshot(*target_), before_) << what;
    EXPECT_FALSE(read_backup(bytes, key)) << what;
  }

  std::unique_ptr<SecretVault> source_;
  std::unique_ptr<SecretVault> target_;
  std::string bytes_;
  std::string pass_bytes_;
  std::string before_;
};

TEST_F(RefusedBackupTest, TheUntouchedFilesRestore) {
  ASSERT_TRUE(read_backup(bytes_, BackupKey::with_master_key(key_.clone())));
  ASSERT_TRUE(read_backup(pass_bytes_, passphrase()));
}

TEST_F(RefusedBackupTest, AChangedByteAnywhere) {
  const BackupKey key = BackupKey::with_master_key(key_.clone());
  // magic, version, kind, key id, stream header, first chunk, the middle, the last chunk, its
  // length prefix.
  const std::size_t n = bytes_.size();
  for (std::size_t offset : {std::size_t{0}, std::size_t{9}, std::size_t{10}, std::size_t{12},
                             std::size_t{30}, std::size_t{60}, n / 2, n - 30, n - 1, n - 40}) {
    std::string tampered = bytes_;
    tampered[offset] = static_cast<char>(tampered[offset] ^ 0x01);
    expect_refused(tampered, key, "byte " + std::to_string(offset));
  }
  const std::size_t p = pass_bytes_.size();
  for (std::size_t offset : {std::size_t{12}, std::size_t{20}, std::size_t{40}, p / 2, p - 1}) {
    std::string tampered = pass_bytes_;
    tampered[offset] = static_cast<char>(tampered[offset] ^ 0x01);
    expect_refused(tampered, passphrase(), "passphrase file byte " + std::to_string(offset));
  }
}

TEST_F(RefusedBackupTest, TruncatedAtSeveralPoints) {
  const BackupKey key = BackupKey::with_master_key(key_.clone());
  const std::size_t n = bytes_.size();
  for (std::size_t size : {std::size_t{0}, std::size_t{5}, std::size_t{27}, std::size_t{40},
                           std::size_t{60}, n / 3, n / 2, n - 60, n - 1}) {
    expect_refused(bytes_.substr(0, size), key, "truncated to " + std::to_string(size));
  }
  // Cut exactly at a chunk boundary: every chunk before is intact, the FINAL one is missing.
  std::size_t at = 8 + 2 + 1 + 16 + 24;
  std::size_t last_boundary = at;
  while (at < n) {
    last_boundary = at;
    const std::size_t length = (static_cast<unsigned char>(bytes_[at]) << 24) |
                               (static_cast<unsigned char>(bytes_[at + 1]) << 16) |
                               (static_cast<unsigned char>(bytes_[at + 2]) << 8) |
                               static_cast<unsigned char>(bytes_[at + 3]);
    at += 4 + length;
  }
  ASSERT_EQ(at, n);
  auto cut = restore_backup(*target_, bytes_.substr(0, last_boundary), key);
  ASSERT_FALSE(cut);
  EXPECT_NE(cut.error().message.find("no final chunk"), std::string::npos) << cut.error().message;
  EXPECT_EQ(snapshot(*target_), before_);
}

TEST_F(RefusedBackupTest, TrailingBytes) {
  expect_refused(bytes_ + "x", BackupKey::with_master_key(key_.clone()), "one byte more");
  expect_refused(bytes_ + bytes_, BackupKey::with_master_key(key_.clone()), "twice");
}

TEST_F(RefusedBackupTest, WrongPassphrase) {
  expect_refused(pass_bytes_, passphrase("not the passphrase"), "wrong passphrase");
  auto report = restore_backup(*target_, pass_bytes_, passphrase("not the passphrase"));
  EXPECT_NE(report.error().message.find("wrong passphrase"), std::string::npos);
  expect_refused(pass_bytes_, BackupKey::with_master_key(key_.clone()), "no passphrase given");
}

TEST_F(RefusedBackupTest, WrongMasterKey) {
  const MasterKey other = MasterKey::generate();
  expect_refused(bytes_, BackupKey::with_master_key(other.clone()), "wrong master key");
  auto report = restore_backup(*target_, bytes_, BackupKey::with_master_key(other.clone()));
  EXPECT_NE(report.error().message.find(key_.key_id()), std::string::npos);
  expect_refused(bytes_, passphrase(), "a passphrase for a master-key backup");
}

TEST_F(RefusedBackupTest, NewerFormatVersion) {
  std::string newer = bytes_;
  newer[9] = static_cast<char>(kBackupFormatVersion + 1);
  expect_refused(newer, BackupKey::with_master_key(key_.clone()), "newer format");
  auto header = read_backup_header(newer);
  ASSERT_FALSE(header);
  EXPECT_NE(header.error().message.find("newer"), std::string::npos);
  expect_refused("not a backup at all", BackupKey::with_master_key(key_.clone()), "garbage");
}

TEST_F(VaultBackupTest, ScheduledBackupsAreMode600AndPrunedToKeep) {
  testing::TempDir dir;
  auto vault = make_vault(source_store_, key_);
  fill(*vault, 5);
  testing::write_file(dir / "unrelated.txt", "kept");
  const BackupKey key = BackupKey::with_master_key(key_.clone());
  clock_.set(std::chrono::system_clock::time_point{std::chrono::seconds{1'796'000'000}});
  std::vector<std::filesystem::path> written;
  for (int i = 0; i < 5; ++i) {
    auto path = run_scheduled_backup(*vault, key, dir.path() / "backups", 3, clock_);
    ASSERT_TRUE(path) << path.error().message;
    written.push_back(path.value());
    clock_.advance(std::chrono::hours{24});
  }
  EXPECT_EQ(written[0].filename().string(), "orgd-vault-20261130T005320Z.bak");
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path() / "backups")) {
    names.push_back(entry.path().filename().string());
    struct stat st {};
    ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << entry.path();
  }
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), 3u);  // no temp file left either
  EXPECT_EQ(names[0], written[2].filename().string());
  EXPECT_EQ(names[2], written[4].filename().string());
  EXPECT_TRUE(std::filesystem::exists(dir / "unrelated.txt"));
  auto bytes = testing::read_file(written[4]);
  auto contents = read_backup(bytes, key);
  ASSERT_TRUE(contents) << contents.error().message;
  EXPECT_EQ(contents.value().secrets.size(), 5u);
}

TEST_F(VaultBackupTest, PruneLeavesOtherFilesAndKeepsAtLeastOne) {
  testing::TempDir dir;
  for (const char* name : {"orgd-vault-20260101T000000Z.bak", "orgd-vault-20260102T000000Z.bak",
                           "orgd-vault-notes.txt", "other.bak"}) {
    testing::write_file(dir / name, "x");
  }
  auto removed = prune_backups(dir.path(), 0);
  ASSERT_TRUE(removed);
  ASSERT_EQ(removed.value().size(), 1u);
  EXPECT_EQ(removed.value()[0].filename().string(), "orgd-vault-20260101T000000Z.bak");
  EXPECT_TRUE(std::filesystem::exists(dir / "orgd-vault-20260102T000000Z.bak"));
  EXPECT_TRUE(std::filesystem::exists(dir / "orgd-vault-notes.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir / "other.bak"));
}

}  // namespace
}  // namespace orgd::secrets
