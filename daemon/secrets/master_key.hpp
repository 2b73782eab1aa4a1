#pragma once

// The vault's master key (DESIGN.md §9): 32 bytes from a key file or an env var (base64), or a
// passphrase stretched with Argon2id under a salt and parameters kept in the vault bucket. The
// master key itself encrypts nothing: every use has its own subkey derived with crypto_kdf, so
// the entry key, the sync digest key, the sealed-intake keypair and the backup key are
// independent (knowing one says nothing of another). docs/vault.md has the formats.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/core/secret_source.hpp"

namespace orgd::secrets {

inline constexpr std::size_t kMasterKeyBytes = 32;
inline constexpr std::size_t kKdfSaltBytes = 16;

// Argon2id (crypto_pwhash ALG_ARGON2ID13) settings of a passphrase: a random salt, the cost.
struct KdfParams {
  std::string salt;  // kKdfSaltBytes raw bytes (not secret)
  std::uint64_t opslimit = 0;
  std::uint64_t memlimit = 0;
};

// The cost of a new salt's parameters: moderate in orgd (about 0.7 s and 256 MiB on a server),
// minimal in tests.
struct KdfCost {
  std::uint64_t opslimit;
  std::uint64_t memlimit;
  static KdfCost moderate();
  static KdfCost interactive();
  static KdfCost minimal();  // crypto_pwhash's minimum: tests only
};

// New parameters with a random salt.
KdfParams new_kdf_params(KdfCost cost);

// Parameters as stored (`meta.kdf` in the vault, a backup's header): the salt in base64.
std::string kdf_params_json(const KdfParams& params);
Result<KdfParams> parse_kdf_params_json(std::string_view json);
// invalid_argument for a salt of the wrong size or a cost outside crypto_pwhash's bounds (or
// above 4 GiB of memory: a forged header must not make orgd allocate without limit).
Result<Ok> check_kdf_params(const KdfParams& params);

class MasterKey {
 public:
  // A fresh random key (a new install, tests).
  static MasterKey generate();
  // 32 raw bytes; invalid_argument otherwise.
  static Result<MasterKey> from_raw(const Secret& key);
  // Standard base64 of 32 bytes; whitespace around and inside (a trailing newline) is ignored.
  // invalid_argument "not base64" or "decodes to N bytes, not 32"; `what` (the file or env var)
  // names where it came from. Never quotes the content.
  static Result<MasterKey> from_base64(const Secret& encoded, const std::string& what);
  // Argon2id of the passphrase; invalid_argument for an empty passphrase or bad params,
  // unavailable when memory for the KDF cannot be had.
  static Result<MasterKey> from_passphrase(const Secret& passphrase, const KdfParams& params);

  MasterKey(MasterKey&&) noexcept = default;
  MasterKey& operator=(MasterKey&&) noexcept = default;
  MasterKey clone() const { return MasterKey(key_.clone()); }

  // 16 hex digits naming this key (BLAKE2b of a derived value: it reveals nothing of the key).
  // Stored with every vault entry and in backups made under the key.
  const std::string& key_id() const { return key_id_; }

  // XChaCha20-Poly1305 key of vault entries (derived once: every entry read and write uses it).
  const Secret& entry_key() const { return entry_key_; }
  // Key of the keyed hashes in orgd_sync (crypto_generichash key size, 32 bytes).
  Secret digest_key() const;
  // secretstream key of backups made under the master key.
  Secret backup_key() const;
  // The sealed-intake X25519 keypair (crypto_box_seed_keypair from a derived seed): the public
  // key raw (32 bytes, what P.api.secrets.key hands out) and the secret key.
  std::string intake_public_key() const;
  Secret intake_secret_key() const;

  // The raw key bytes, for a backup of the key itself; handle with care.
  const Secret& raw() const { return key_; }

 private:
  explicit MasterKey(Secret key);
  Secret derive(std::uint64_t id, std::size_t size) const;

  Secret key_;
  std::string key_id_;
  Secret entry_key_;
};

// The vault key's source as the config names it (secrets.master_key_file | master_key_env |
// passphrase_env). For a passphrase the Argon2id parameters are read from `vault` (key
// `meta.kdf`), or written there with a new salt of `cost` when absent — with create, so
// replicas starting together agree (the loser of the race reads the winner's).
// invalid_argument / not_found naming the file or variable; unavailable when KV cannot be read.
Result<MasterKey> load_master_key(const SecretsConfig& config, const SecretSource& source,
                                  KvBucket& vault, KdfCost cost = KdfCost::moderate());

// Standard base64 of bytes that are not secret (salts, nonces, ciphertext), and back
// (whitespace ignored; nullopt when not base64).
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

// The KV key of the passphrase's parameters.
inline constexpr std::string_view kKdfKey = "meta.kdf";

}  // namespace orgd::secrets
