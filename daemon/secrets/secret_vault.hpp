#pragma once

// The vault (DESIGN.md §9): secret values in KV `orgd_vault`, ciphertext only. Each value is
// XChaCha20-Poly1305 under a key derived from the master key, with a random nonce, and
// additional data binding the scope, name, version, the head's generation and the key id, so a
// record copied to another name or version, replayed from before a removal, or kept from an
// older master key does not open. A tampered record is an error (invalid_argument), never
// garbage. Scopes: "org" and a repo's name; a repo's own value overrides the org's.
//
// KV keys (tokens escaped: see kv_token): `head.<scope>.<name>` (metadata, never a value) and
// `value.<scope>.<name>.<version>` (one encrypted value); `meta.key` names the master key the
// vault is under (and the one it is being rotated from). Every write of a head is
// revision-checked and retried on conflict, so replicas racing agree on one history.
// docs/vault.md has the formats.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "daemon/secrets/master_key.hpp"

namespace orgd::secrets {

inline constexpr std::string_view kOrgScope = "org";
inline constexpr std::string_view kVaultBucket = "orgd_vault";

// The bucket the vault lives in (KvBucket::open / MemoryKvStore::open): history 1 (versions
// are the vault's own records), no ttl.
BucketSpec vault_bucket_spec(int replicas = 1);

// One version of a secret, as its head records it.
struct VersionInfo {
  std::uint64_t version = 0;
  std::chrono::system_clock::time_point created;
  std::string source;  // "import", "set", "rotate", "restore", ...
};

// What the vault knows of a secret besides its value.
struct SecretHead {
  std::string scope;
  std::string name;
  std::uint64_t active = 0;   // 0: none (only a pending value so far)
  std::uint64_t pending = 0;  // a rotation's new value, not active yet; 0: none
  std::uint64_t latest = 0;   // the highest version number handed out
  std::string generation;     // random per head: a removed secret's records never open again
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point updated;
  std::vector<VersionInfo> versions;  // stored versions, oldest first

  const VersionInfo* find(std::uint64_t version) const;
};

struct SetResult {
  std::uint64_t version = 0;
  bool unchanged = false;  // the value equalled the active one: no new version
};

struct Resolved {
  std::string scope;  // the repo's name, or "org"
  std::uint64_t version = 0;
  Secret value;
};

// A change made through this vault (names only).
struct VaultChange {
  std::string action;  // set, pending, activate, retire, remove, rotate_master_key, restore
  std::string scope;
  std::string name;
  std::uint64_t version = 0;
};

struct VaultOptions {
  // Versions kept per secret besides the active and pending ones.
  int keep_versions = 10;
  // Retries of a revision-checked write that lost a race.
  int max_retries = 20;
};

class SecretVault {
 public:
  // Opens the vault under `key`. `previous` is the master key a rotation is moving away from
  // (entries still under it stay readable, and rotate_master_key finishes the move). Checks
  // `meta.key`: a vault under another key is refused (invalid_argument naming both key ids:
  // a wrong passphrase or key file), so nothing is written under a wrong key. A new vault's
  // `meta.key` is created.
  static Result<std::unique_ptr<SecretVault>> open(std::shared_ptr<KvBucket> bucket, MasterKey key,
                                                   std::optional<MasterKey> previous = {},
                                                   const Clock& clock = system_clock(),
                                                   VaultOptions options = {});

  // A new version, active at once; "unchanged" (no write) when it equals the active value
  // (constant-time compare). invalid_argument for a bad scope or name or an empty value.
  Result<SetResult> set(const std::string& scope, const std::string& name, const Secret& value,
                        const std::string& source);
  // The active value (version 0), or that version. not_found when absent or retired.
  Result<Secret> get(const std::string& scope, const std::string& name, std::uint64_t version = 0);
  // The repo's own active value, else the org's.
  Result<Resolved> resolve(const std::string& repo, const std::string& name);
  // Every head (names, scopes, versions, times; never values), sorted by scope then name.
  Result<std::vector<SecretHead>> list();
  Result<SecretHead> head(const std::string& scope, const std::string& name);
  Result<std::vector<VersionInfo>> history(const std::string& scope, const std::string& name);
  Result<Ok> remove(const std::string& scope, const std::string& name);

  // Rotation: a new value stored as pending (the active one stays) -> its version.
  Result<std::uint64_t> put_pending(const std::string& scope, const std::string& name,
                                    const Secret& value, const std::string& source = "rotate");
  // Makes a stored version the active one (clears pending when it was the pending one).
  Result<Ok> activate(const std::string& scope, const std::string& name, std::uint64_t version);
  // Drops an old version's value (not the active or pending one: invalid_argument).
  Result<Ok> retire(const std::string& scope, const std::string& name, std::uint64_t version);

  // Re-encrypts every entry under `new_key`, online: each record is rewritten revision-checked,
  // and `meta.key` says a rotation is under way until the last one is done, so an interrupted
  // rotation is finished by opening with (new key, previous = old key) and calling this again
  // with the new key. -> the number of records rewritten.
  Result<std::size_t> rotate_master_key(MasterKey new_key);

  // The sealed intake (P.api.secrets.key): values sent to orgd over NATS are crypto_box_seal'ed
  // to this 32-byte key; open_sealed opens them. invalid_argument when it does not open.
  std::string public_key() const;
  Result<Secret> open_sealed(std::string_view sealed) const;
  // The keyed-hash key of orgd_sync's digests (changes with the master key).
  Secret digest_key() const;
  std::string key_id() const;

  // Called after every change made through this vault (from the calling thread; keep it short:
  // post a sync). Changes by other replicas are not seen here.
  void on_change(std::function<void(const VaultChange&)> callback);
  // Counts changes made through this vault.
  std::uint64_t change_count() const { return changes_.load(); }

  // Every stored version of every secret, decrypted (for backups).
  struct ExportedSecret {
    SecretHead head;
    std::vector<std::pair<std::uint64_t, Secret>> values;  // by version, ascending
  };
  Result<std::vector<ExportedSecret>> export_all();

  KvBucket& bucket() { return *bucket_; }

 private:
  struct Keys {
    std::shared_ptr<MasterKey> current;
    std::shared_ptr<MasterKey> previous;  // null outside a master-key rotation
  };
  SecretVault(std::shared_ptr<KvBucket> bucket, Keys keys, const Clock& clock,
              VaultOptions options);

  Keys keys() const;
  Result<std::optional<std::pair<SecretHead, std::uint64_t>>> read_head(const std::string& scope,
                                                                        const std::string& name);
  Result<Secret> read_value(const SecretHead& head, std::uint64_t version);
  Result<std::uint64_t> store_new(const std::string& scope, const std::string& name,
                                  const Secret& value, const std::string& source, bool pending,
                                  bool* unchanged);
  // Re-reads the head and applies `change` until a revision-checked update lands; `change`
  // returns false to write nothing.
  Result<SecretHead> update_head(const std::string& scope, const std::string& name,
                                 const std::function<Result<bool>(SecretHead&)>& change);
  void prune(SecretHead& head, std::vector<std::uint64_t>& dropped) const;
  void drop_values(const SecretHead& head, const std::vector<std::uint64_t>& versions);
  void notify(VaultChange change);

  std::shared_ptr<KvBucket> bucket_;
  const Clock& clock_;
  VaultOptions options_;
  mutable std::mutex keys_mutex_;  // guards keys_
  // Held shared while a value record is encrypted and written, exclusively while a master-key
  // rotation switches keys.
  std::shared_mutex record_writes_;
  Keys keys_;
  std::mutex callback_mutex_;  // guards callback_
  std::function<void(const VaultChange&)> callback_;
  std::atomic<std::uint64_t> changes_{0};
};

// A head as stored (the vault's `head.*` records, and the heads inside a backup), and back:
// nullopt when the text is not a well-formed head.
std::string encode_head(const SecretHead& head);
std::optional<SecretHead> decode_head(std::string_view text);

// A scope or name as one KV key token: [A-Za-z0-9_-] kept, every other byte as =XX (hex), so
// repo names with dots and secret names of any spelling stay one token.
std::string kv_token(std::string_view text);
// A secret name is 1-255 bytes of [A-Za-z0-9_.-]; a scope "org" or a repo name of the same
// characters. invalid_argument naming the problem otherwise.
Result<Ok> check_scope_and_name(const std::string& scope, const std::string& name);

// RepoSecrets over the vault: each of a repo's configured names (repos.<repo>.secrets),
// resolved to the repo's own value else the org's.
class VaultRepoSecrets final : public RepoSecrets {
 public:
  VaultRepoSecrets(std::shared_ptr<SecretVault> vault,
                   std::map<std::string, std::vector<std::string>> names_by_repo);
  // The names of each repo's `secrets:` in the config.
  VaultRepoSecrets(std::shared_ptr<SecretVault> vault,
                   const std::map<std::string, RepoConfig>& repos);
  // A repo without configured secrets gets none; not_found naming the secret when one has no
  // value in either scope.
  Result<std::vector<NamedSecret>> secrets_for(const std::string& repo) override;

 private:
  std::shared_ptr<SecretVault> vault_;
  std::map<std::string, std::vector<std::string>> names_by_repo_;
};

}  // namespace orgd::secrets
