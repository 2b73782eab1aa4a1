#pragma once

// Encrypted backups of the whole vault (`orgctl secrets backup|restore`, scheduled backups to
// secrets.backup.dir). One file: a versioned header (magic, format version, key kind: an
// Argon2id salt and cost for a passphrase, or the key id for the master key), then libsodium
// secretstream (XChaCha20-Poly1305) chunks, the first bound to the header as additional data,
// the last tagged FINAL. Inside the stream the values are in clear (the stream is the
// encryption), with every secret's head. The functions work on the encrypted bytes, so a backup
// crosses NATS (P.api.secrets.backup) already encrypted. docs/vault.md has the format.
//
// Reading verifies the whole file into memory before anything is written: a wrong passphrase
// or key, a changed byte anywhere, a truncated file or trailing bytes are refused
// (invalid_argument with what is wrong) and a restore then changes nothing.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/secrets/master_key.hpp"
#include "daemon/secrets/secret_vault.hpp"

namespace orgd::secrets {

inline constexpr std::uint16_t kBackupFormatVersion = 1;

enum class BackupKeyKind : std::uint8_t { passphrase = 1, master_key = 2 };

// What a backup is encrypted (or opened) with: a passphrase (Argon2id; `cost` applies when
// writing, the header's parameters when reading) or the master key (its backup subkey).
struct BackupKey {
  std::optional<Secret> passphrase;
  KdfCost cost = KdfCost::moderate();
  std::optional<MasterKey> master_key;

  static BackupKey with_passphrase(Secret passphrase, KdfCost cost = KdfCost::moderate());
  static BackupKey with_master_key(MasterKey key);
};

// The clear part of a backup's header (readable without a key: what to ask the user for).
struct BackupHeader {
  std::uint16_t format_version = 0;
  BackupKeyKind kind = BackupKeyKind::master_key;
  std::string key_id;  // master_key kind
  KdfParams kdf;       // passphrase kind
};

struct BackupContents {
  std::chrono::system_clock::time_point created;
  std::string vault_key_id;  // the vault's master key when the backup was made
  std::vector<SecretVault::ExportedSecret> secrets;
};

struct RestoreReport {
  std::size_t restored = 0;   // secrets given a new active version from the backup
  std::size_t unchanged = 0;  // secrets whose active value already equalled the backup's
  std::size_t skipped = 0;    // secrets with no active value in the backup
};

// The encrypted bytes of a backup of `secrets` / of the whole vault.
Result<std::string> encrypt_backup(const std::vector<SecretVault::ExportedSecret>& secrets,
                                   const std::string& vault_key_id, const BackupKey& key,
                                   std::chrono::system_clock::time_point now);
Result<std::string> make_backup(SecretVault& vault, const BackupKey& key, const Clock& clock);

// The header alone (magic, version, key kind); invalid_argument for a file that is not a
// backup or of a newer format version.
Result<BackupHeader> read_backup_header(std::string_view bytes);
// The whole backup, verified and decrypted into memory.
Result<BackupContents> read_backup(std::string_view bytes, const BackupKey& key);

// Merge (the default and only mode): for every secret in the backup, its active value becomes
// a new active version (source "restore") where it differs from the vault's; secrets the
// backup does not have are left alone; pending values and older versions in the backup are not
// restored (a rotation in flight starts again). The backup is verified whole first: a refused
// backup changes nothing.
Result<RestoreReport> restore_backup(SecretVault& vault, std::string_view bytes,
                                     const BackupKey& key);

// A backup's name, file or object: orgd-vault-<UTC YYYYMMDDTHHMMSSZ>.bak (sorts as time does).
std::string backup_name(std::chrono::system_clock::time_point now);
bool is_backup_name(std::string_view name);

// Backups in an object store (secrets.backup.r2, docs/r2-backups.md): `bytes` put under
// backup_name(now) after the store's ensure() (orgd-vault-<stamp>-2.bak … when that second
// already has one) -> the key (without the store's prefix).
Result<std::string> write_store_backup(ObjectStore& store, std::string_view bytes,
                                       std::chrono::system_clock::time_point now);
// The backups in the store (objects named as backup_name() makes them), oldest first.
Result<std::vector<StoredObject>> store_backups(ObjectStore& store);
// Removes all but the `keep` newest of them (other objects are left alone) -> the keys removed.
Result<std::vector<std::string>> prune_store_backups(ObjectStore& store, int keep);

// Scheduled backups: `bytes` to `<dir>/orgd-vault-<UTC YYYYMMDDTHHMMSSZ>.bak`, mode 0600,
// written to a temp file in `dir`, synced, then renamed (no half-written backup is ever seen
// under its name). -> the path.
Result<std::filesystem::path> write_backup_file(const std::filesystem::path& dir,
                                                std::string_view bytes,
                                                std::chrono::system_clock::time_point now);
// Deletes all but the `keep` newest orgd-vault-*.bak in `dir` (other files are left alone).
// -> the paths removed.
Result<std::vector<std::filesystem::path>> prune_backups(const std::filesystem::path& dir,
                                                         int keep);
// make_backup + write_backup_file + prune_backups: what secrets.backup's interval runs.
Result<std::filesystem::path> run_scheduled_backup(SecretVault& vault, const BackupKey& key,
                                                   const std::filesystem::path& dir, int keep,
                                                   const Clock& clock);

}  // namespace orgd::secrets
