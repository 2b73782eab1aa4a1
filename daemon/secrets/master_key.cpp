#include "daemon/secrets/master_key.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace orgd::secrets {
namespace {

// crypto_kdf contexts are 8 bytes; the subkey ids below say what each key is for. Changing
// either makes every vault entry unreadable: they are part of the format (docs/vault.md).
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES + 1] = "orgdvlt1";
constexpr std::uint64_t kEntryKeyId = 1;
constexpr std::uint64_t kDigestKeyId = 2;
constexpr std::uint64_t kIntakeSeedId = 3;
constexpr std::uint64_t kBackupKeyId = 4;
constexpr std::uint64_t kFingerprintId = 5;

constexpr std::uint64_t kMaxKdfMemory = 4ULL << 30;

void ensure_sodium() {
  static const int ready = sodium_init();
  if (ready < 0) throw std::runtime_error("libsodium could not be initialised");
}

// A Secret of `size` bytes filled by `fill` (which writes straight into sodium memory).
template <class Fill>
Secret secret_of_size(std::size_t size, Fill fill) {
  std::string zeros(size, '\0');
  Secret out = Secret::take(std::move(zeros));
  fill(reinterpret_cast<unsigned char*>(const_cast<char*>(out.expose().data())));
  return out;
}

std::string to_hex(const unsigned char* bytes, std::size_t size) {
  std::string hex(size * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes, size);
  hex.pop_back();
  return hex;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  ensure_sodium();
  const auto variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), variant);
  out.resize(out.size() - 1);  // the NUL
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  ensure_sodium();
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t size = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), " \t\r\n", &size, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(size);
  return out;
}

KdfCost KdfCost::moderate() {
  return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}
KdfCost KdfCost::interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}
KdfCost KdfCost::minimal() { return {crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN}; }

KdfParams new_kdf_params(KdfCost cost) {
  ensure_sodium();
  KdfParams params;
  params.salt.assign(kKdfSaltBytes, '\0');
  randombytes_buf(params.salt.data(), params.salt.size());
  params.opslimit = cost.opslimit;
  params.memlimit = cost.memlimit;
  return params;
}

std::string kdf_params_json(const KdfParams& params) {
  return nlohmann::json{{"alg", "argon2id13"},
                        {"salt", base64_encode(params.salt)},
                        {"opslimit", params.opslimit},
                        {"memlimit", params.memlimit}}
      .dump();
}

Result<KdfParams> parse_kdf_params_json(std::string_view json) {
  const auto doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || doc.value("alg", "") != "argon2id13" || !doc.contains("salt") ||
      !doc["salt"].is_string() || !doc.contains("opslimit") ||
      !doc["opslimit"].is_number_unsigned() || !doc.contains("memlimit") ||
      !doc["memlimit"].is_number_unsigned()) {
    return invalid_argument("the passphrase parameters (meta.kdf) are not argon2id13 JSON");
  }
  auto salt = base64_decode(doc["salt"].get<std::string>());
  if (!salt) return invalid_argument("the passphrase salt (meta.kdf) is not base64");
  KdfParams params{std::move(*salt), doc["opslimit"].get<std::uint64_t>(),
                   doc["memlimit"].get<std::uint64_t>()};
  auto checked = check_kdf_params(params);
  if (!checked) return checked.error();
  return params;
}

Result<Ok> check_kdf_params(const KdfParams& params) {
  if (params.salt.size() != kKdfSaltBytes) {
    return invalid_argument(
        fmt::format("an Argon2id salt is {} bytes, got {}", kKdfSaltBytes, params.salt.size()));
  }
  if (params.opslimit < crypto_pwhash_OPSLIMIT_MIN ||
      params.opslimit > crypto_pwhash_OPSLIMIT_SENSITIVE * 4) {
    return invalid_argument(fmt::format("Argon2id opslimit {} is out of range", params.opslimit));
  }
  if (params.memlimit < crypto_pwhash_MEMLIMIT_MIN || params.memlimit > kMaxKdfMemory) {
    return invalid_argument(fmt::format("Argon2id memlimit {} is out of range", params.memlimit));
  }
  return Ok{};
}

MasterKey::MasterKey(Secret key) : key_(std::move(key)) {
  Secret fingerprint_source = derive(kFingerprintId, 32);
  unsigned char id[8];
  crypto_generichash(id, sizeof id,
                     reinterpret_cast<const unsigned char*>(fingerprint_source.expose().data()),
                     fingerprint_source.size(), nullptr, 0);
  key_id_ = to_hex(id, sizeof id);
  entry_key_ = derive(kEntryKeyId, crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
}

MasterKey MasterKey::generate() {
  ensure_sodium();
  return MasterKey(secret_of_size(kMasterKeyBytes,
                                  [](unsigned char* p) { randombytes_buf(p, kMasterKeyBytes); }));
}

Result<MasterKey> MasterKey::from_raw(const Secret& key) {
  ensure_sodium();
  if (key.size() != kMasterKeyBytes) {
    return invalid_argument(
        fmt::format("a master key is {} bytes, got {}", kMasterKeyBytes, key.size()));
  }
  return MasterKey(key.clone());
}

Result<MasterKey> MasterKey::from_base64(const Secret& encoded, const std::string& what) {
  ensure_sodium();
  const std::string_view text = encoded.expose();
  // Decoded into sodium memory, never a std::string.
  Secret decoded = secret_of_size(text.size() / 4 * 3 + 3, [](unsigned char*) {});
  std::size_t size = 0;
  const char* end = nullptr;
  const int rc = sodium_base642bin(
      reinterpret_cast<unsigned char*>(const_cast<char*>(decoded.expose().data())), decoded.size(),
      text.data(), text.size(), " \t\r\n", &size, &end, sodium_base64_VARIANT_ORIGINAL);
  if (rc != 0 || end != text.data() + text.size() || size == 0) {
    return invalid_argument(
        fmt::format("the master key in {} is not base64 (32 random bytes, base64: "
                    "head -c 32 /dev/urandom | base64)",
                    what));
  }
  if (size != kMasterKeyBytes) {
    return invalid_argument(fmt::format("the master key in {} decodes to {} bytes, not {}", what,
                                        size, kMasterKeyBytes));
  }
  return MasterKey(Secret::from(decoded.expose().substr(0, size)));
}

Result<MasterKey> MasterKey::from_passphrase(const Secret& passphrase, const KdfParams& params) {
  ensure_sodium();
  if (passphrase.empty()) return invalid_argument("the vault passphrase is empty");
  auto checked = check_kdf_params(params);
  if (!checked) return checked.error();
  int rc = 0;
  Secret key = secret_of_size(kMasterKeyBytes, [&](unsigned char* out) {
    rc = crypto_pwhash(out, kMasterKeyBytes, passphrase.expose().data(), passphrase.size(),
                       reinterpret_cast<const unsigned char*>(params.salt.data()), params.opslimit,
                       static_cast<std::size_t>(params.memlimit), crypto_pwhash_ALG_ARGON2ID13);
  });
  if (rc != 0) {
    return unavailable(
        fmt::format("Argon2id could not run (memlimit {} bytes: out of memory?)", params.memlimit));
  }
  return MasterKey(std::move(key));
}

Secret MasterKey::derive(std::uint64_t id, std::size_t size) const {
  return secret_of_size(size, [&](unsigned char* out) {
    crypto_kdf_derive_from_key(out, size, id, kKdfContext,
                               reinterpret_cast<const unsigned char*>(key_.expose().data()));
  });
}

Secret MasterKey::digest_key() const { return derive(kDigestKeyId, crypto_generichash_KEYBYTES); }
Secret MasterKey::backup_key() const {
  return derive(kBackupKeyId, crypto_secretstream_xchacha20poly1305_KEYBYTES);
}

std::string MasterKey::intake_public_key() const {
  Secret seed = derive(kIntakeSeedId, crypto_box_SEEDBYTES);
  std::string pk(crypto_box_PUBLICKEYBYTES, '\0');
  Secret sk = secret_of_size(crypto_box_SECRETKEYBYTES, [&](unsigned char* out) {
    crypto_box_seed_keypair(reinterpret_cast<unsigned char*>(pk.data()), out,
                            reinterpret_cast<const unsigned char*>(seed.expose().data()));
  });
  return pk;
}

Secret MasterKey::intake_secret_key() const {
  Secret seed = derive(kIntakeSeedId, crypto_box_SEEDBYTES);
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  return secret_of_size(crypto_box_SECRETKEYBYTES, [&](unsigned char* out) {
    crypto_box_seed_keypair(pk, out, reinterpret_cast<const unsigned char*>(seed.expose().data()));
  });
}

Result<MasterKey> load_master_key(const SecretsConfig& config, const SecretSource& source,
                                  KvBucket& vault, KdfCost cost) {
  if (!config.master_key_file.empty()) {
    auto encoded = source.from_file(config.master_key_file);
    if (!encoded) return encoded.error();
    return MasterKey::from_base64(encoded.value(), "file " + config.master_key_file);
  }
  if (!config.master_key_env.empty()) {
    auto encoded = source.from_env(config.master_key_env);
    if (!encoded) return encoded.error();
    return MasterKey::from_base64(encoded.value(), "environment variable " + config.master_key_env);
  }
  if (config.passphrase_env.empty()) {
    return invalid_argument(
        "no master key: set secrets.master_key_file, master_key_env or passphrase_env");
  }
  auto passphrase = source.from_env(config.passphrase_env);
  if (!passphrase) return passphrase.error();

  const std::string key{kKdfKey};
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto stored = vault.get(key);
    if (!stored) return stored.error();
    if (stored.value()) {
      auto params = parse_kdf_params_json(stored.value()->value);
      if (!params) return params.error();
      return MasterKey::from_passphrase(passphrase.value(), params.value());
    }
    const KdfParams params = new_kdf_params(cost);
    auto created = vault.create(key, kdf_params_json(params));
    if (created) return MasterKey::from_passphrase(passphrase.value(), params);
    if (created.error().code != ErrorCode::conflict) return created.error();
    // Another replica wrote its salt first: read it.
  }
  return conflict("the passphrase parameters (meta.kdf) keep changing");
}

}  // namespace orgd::secrets
