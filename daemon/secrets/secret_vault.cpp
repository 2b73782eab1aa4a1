#include "daemon/secrets/secret_vault.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <thread>
#include <tuple>

namespace orgd::secrets {
namespace {

// Before trying a revision-checked write again after a conflict: a random wait of up to
// 2^attempt ms (at most 64 ms), so replicas racing on one key stop colliding in lock step (with
// no wait, the slower of two could lose every one of its max_retries attempts).
void wait_after_conflict(int attempt) {
  if (attempt <= 0) return;
  const std::uint32_t bound = 1u << std::min(attempt, 6);
  std::this_thread::sleep_for(std::chrono::microseconds(randombytes_uniform(bound * 1000u)));
}

using json = nlohmann::json;
using TimePoint = std::chrono::system_clock::time_point;

constexpr std::string_view kMetaKey = "meta.key";
constexpr std::string_view kAdLabel = "orgd-vault-entry-1";

std::int64_t to_ms(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
  return TimePoint{std::chrono::duration_cast<TimePoint::duration>(std::chrono::milliseconds{ms})};
}

std::string head_key(const std::string& scope, const std::string& name) {
  return "head." + kv_token(scope) + "." + kv_token(name);
}
std::string value_key(const std::string& scope, const std::string& name, std::uint64_t version) {
  return "value." + kv_token(scope) + "." + kv_token(name) + "." + std::to_string(version);
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string hex(bytes * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), reinterpret_cast<const unsigned char*>(raw.data()),
                 raw.size());
  hex.pop_back();
  return hex;
}

// The additional data of a value record: what it is bound to. Each field length-prefixed, so
// no two different bindings serialise alike.
std::string additional_data(const std::string& key, const std::string& generation,
                            const std::string& key_id) {
  std::string ad;
  for (const std::string_view field :
       {kAdLabel, std::string_view{key}, std::string_view{generation}, std::string_view{key_id}}) {
    ad += std::to_string(field.size());
    ad += ':';
    ad += field;
  }
  return ad;
}

Result<SecretHead> parse_head(const std::string& key, const std::string& text) {
  auto head = decode_head(text);
  if (!head) return invalid_argument(fmt::format("vault record {} is not a secret head", key));
  return std::move(*head);
}

struct MetaKey {
  std::string key_id;
  std::string previous;  // empty outside a master-key rotation
};

std::string meta_json(const MetaKey& meta) {
  json doc{{"key_id", meta.key_id}};
  if (!meta.previous.empty()) doc["previous"] = meta.previous;
  return doc.dump();
}

Result<MetaKey> parse_meta(const std::string& text) {
  const auto doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("key_id") || !doc["key_id"].is_string()) {
    return invalid_argument("vault record meta.key is not valid");
  }
  return MetaKey{doc["key_id"].get<std::string>(), doc.value("previous", "")};
}

// A Secret of `size` zero bytes, to be written in place (sodium memory throughout).
Secret zeroed_secret(std::size_t size) {
  std::string zeros(size, '\0');
  return Secret::take(std::move(zeros));
}
unsigned char* bytes_of(const Secret& secret) {
  return reinterpret_cast<unsigned char*>(const_cast<char*>(secret.expose().data()));
}

std::string encrypt_record(const MasterKey& key, const std::string& kv_key,
                           const std::string& generation, const Secret& value) {
  const Secret& entry_key = key.entry_key();
  const std::string ad = additional_data(kv_key, generation, key.key_id());
  std::string nonce(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, '\0');
  randombytes_buf(nonce.data(), nonce.size());
  std::string ct(value.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long ct_size = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(ct.data()), &ct_size,
      reinterpret_cast<const unsigned char*>(value.expose().data()), value.size(),
      reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
      reinterpret_cast<const unsigned char*>(nonce.data()), bytes_of(entry_key));
  ct.resize(ct_size);
  return json{{"kid", key.key_id()}, {"nonce", base64_encode(nonce)}, {"ct", base64_encode(ct)}}
      .dump();
}

struct Record {
  std::string key_id;
  std::string nonce;
  std::string ct;
};

Result<Record> parse_record(const std::string& kv_key, const std::string& text) {
  const auto doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&] {
    return invalid_argument(fmt::format("vault entry {} is damaged (not a value record)", kv_key));
  };
  if (!doc.is_object()) return bad();
  for (const char* field : {"kid", "nonce", "ct"}) {
    if (!doc.contains(field) || !doc[field].is_string()) return bad();
  }
  auto nonce = base64_decode(doc["nonce"].get<std::string>());
  auto ct = base64_decode(doc["ct"].get<std::string>());
  if (!nonce || !ct || nonce->size() != crypto_aead_xchacha20poly1305_ietf_NPUBBYTES ||
      ct->size() < crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return bad();
  }
  return Record{doc["kid"].get<std::string>(), std::move(*nonce), std::move(*ct)};
}

Result<Secret> decrypt_record(const MasterKey& key, const std::string& kv_key,
                              const std::string& generation, const Record& record) {
  const Secret& entry_key = key.entry_key();
  const std::string ad = additional_data(kv_key, generation, record.key_id);
  Secret plain = zeroed_secret(record.ct.size() - crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long size = 0;
  // An empty plaintext cannot be stored (values are never empty), so `plain` has memory.
  if (plain.empty() ||
      crypto_aead_xchacha20poly1305_ietf_decrypt(
          bytes_of(plain), &size, nullptr, reinterpret_cast<const unsigned char*>(record.ct.data()),
          record.ct.size(), reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
          reinterpret_cast<const unsigned char*>(record.nonce.data()), bytes_of(entry_key)) != 0) {
    return invalid_argument(fmt::format(
        "vault entry {} failed authentication: tampered, moved from another name or version, or "
        "not under this master key",
        kv_key));
  }
  return plain;
}

bool valid_token_text(const std::string& text) {
  if (text.empty() || text.size() > 255) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

}  // namespace

std::string encode_head(const SecretHead& head) {
  json versions = json::array();
  for (const auto& v : head.versions) {
    versions.push_back({{"v", v.version}, {"created", to_ms(v.created)}, {"source", v.source}});
  }
  const json doc{{"scope", head.scope},
                 {"name", head.name},
                 {"active", head.active},
                 {"pending", head.pending},
                 {"latest", head.latest},
                 {"gen", head.generation},
                 {"created", to_ms(head.created)},
                 {"updated", to_ms(head.updated)},
                 {"versions", std::move(versions)}};
  return doc.dump();
}

std::optional<SecretHead> decode_head(std::string_view text) {
  const auto doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  try {
    if (!doc.is_object()) return std::nullopt;
    SecretHead head;
    head.scope = doc.at("scope").get<std::string>();
    head.name = doc.at("name").get<std::string>();
    head.active = doc.at("active").get<std::uint64_t>();
    head.pending = doc.at("pending").get<std::uint64_t>();
    head.latest = doc.at("latest").get<std::uint64_t>();
    head.generation = doc.at("gen").get<std::string>();
    head.created = from_ms(doc.at("created").get<std::int64_t>());
    head.updated = from_ms(doc.at("updated").get<std::int64_t>());
    for (const auto& v : doc.at("versions")) {
      head.versions.push_back({v.at("v").get<std::uint64_t>(),
                               from_ms(v.at("created").get<std::int64_t>()),
                               v.at("source").get<std::string>()});
    }
    return head;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

BucketSpec vault_bucket_spec(int replicas) {
  BucketSpec spec;
  spec.name = std::string{kVaultBucket};
  spec.description = "orgd secret vault: encrypted entries only (DESIGN.md 9)";
  spec.replicas = replicas;
  return spec;
}

const VersionInfo* SecretHead::find(std::uint64_t version) const {
  for (const auto& v : versions) {
    if (v.version == version) return &v;
  }
  return nullptr;
}

std::string kv_token(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
        c == '-') {
      out.push_back(ch);
    } else {
      out.push_back('=');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

Result<Ok> check_scope_and_name(const std::string& scope, const std::string& name) {
  if (!valid_token_text(scope)) {
    return invalid_argument(fmt::format(
        "scope '{}' is not \"org\" or a repo name (1-255 of A-Z a-z 0-9 _ . -)", scope));
  }
  if (!valid_token_text(name)) {
    return invalid_argument(
        fmt::format("secret name '{}' is not 1-255 of A-Z a-z 0-9 _ . -", name));
  }
  return Ok{};
}

SecretVault::SecretVault(std::shared_ptr<KvBucket> bucket, Keys keys, const Clock& clock,
                         VaultOptions options)
    : bucket_(std::move(bucket)), clock_(clock), options_(options), keys_(std::move(keys)) {}

Result<std::unique_ptr<SecretVault>> SecretVault::open(std::shared_ptr<KvBucket> bucket,
                                                       MasterKey key,
                                                       std::optional<MasterKey> previous,
                                                       const Clock& clock, VaultOptions options) {
  if (sodium_init() < 0) return internal_error("libsodium could not be initialised");
  Keys keys{std::make_shared<MasterKey>(std::move(key)), nullptr};
  if (previous) keys.previous = std::make_shared<MasterKey>(std::move(*previous));
  const std::string meta_key{kMetaKey};
  const std::string& id = keys.current->key_id();
  const std::string previous_id = keys.previous ? keys.previous->key_id() : "";
  for (int attempt = 0; attempt < options.max_retries; ++attempt) {
    wait_after_conflict(attempt);
    auto stored = bucket->get(meta_key);
    if (!stored) return stored.error();
    if (!stored.value()) {
      // A new vault (or one from before meta.key): it is under this key from now on.
      auto created = bucket->create(meta_key, meta_json({id, ""}));
      if (!created && created.error().code != ErrorCode::conflict) return created.error();
      if (!created) continue;
      keys.previous.reset();
      return std::unique_ptr<SecretVault>(
          new SecretVault(std::move(bucket), std::move(keys), clock, options));
    }
    auto meta = parse_meta(stored.value()->value);
    if (!meta) return meta.error();
    if (meta.value().key_id == id) {
      // Under this key; a rotation from `previous` may still be finishing.
      if (meta.value().previous.empty() || meta.value().previous != previous_id) {
        keys.previous.reset();
      }
      return std::unique_ptr<SecretVault>(
          new SecretVault(std::move(bucket), std::move(keys), clock, options));
    }
    if (!previous_id.empty() && meta.value().key_id == previous_id &&
        meta.value().previous.empty()) {
      // Opened with the new key and the old one: the rotation starts now, so every replica
      // that opens with the old key alone is refused from here on.
      auto updated =
          bucket->update(meta_key, meta_json({id, previous_id}), stored.value()->revision);
      if (!updated && updated.error().code != ErrorCode::conflict) return updated.error();
      if (!updated) continue;
      return std::unique_ptr<SecretVault>(
          new SecretVault(std::move(bucket), std::move(keys), clock, options));
    }
    return invalid_argument(fmt::format(
        "the vault is under master key {}{}; this key is {} (wrong passphrase or key file?)",
        meta.value().key_id,
        meta.value().previous.empty() ? "" : " (rotating from " + meta.value().previous + ")", id));
  }
  return conflict("vault record meta.key keeps changing");
}

SecretVault::Keys SecretVault::keys() const {
  std::lock_guard lock(keys_mutex_);
  return keys_;
}

std::string SecretVault::public_key() const { return keys().current->intake_public_key(); }
Secret SecretVault::digest_key() const { return keys().current->digest_key(); }
std::string SecretVault::key_id() const { return keys().current->key_id(); }

Result<Secret> SecretVault::open_sealed(std::string_view sealed) const {
  if (sealed.size() <= crypto_box_SEALBYTES) {
    return invalid_argument("a sealed value is too short");
  }
  const auto k = keys();
  const std::string pk = k.current->intake_public_key();
  const Secret sk = k.current->intake_secret_key();
  Secret plain = zeroed_secret(sealed.size() - crypto_box_SEALBYTES);
  if (crypto_box_seal_open(bytes_of(plain), reinterpret_cast<const unsigned char*>(sealed.data()),
                           sealed.size(), reinterpret_cast<const unsigned char*>(pk.data()),
                           bytes_of(sk)) != 0) {
    return invalid_argument(
        "the sealed value does not open (not sealed to this vault's public key, or altered)");
  }
  return plain;
}

void SecretVault::on_change(std::function<void(const VaultChange&)> callback) {
  std::lock_guard lock(callback_mutex_);
  callback_ = std::move(callback);
}

void SecretVault::notify(VaultChange change) {
  ++changes_;
  std::function<void(const VaultChange&)> callback;
  {
    std::lock_guard lock(callback_mutex_);
    callback = callback_;
  }
  if (callback) callback(change);
}

Result<std::optional<std::pair<SecretHead, std::uint64_t>>> SecretVault::read_head(
    const std::string& scope, const std::string& name) {
  const std::string key = head_key(scope, name);
  auto entry = bucket_->get(key);
  if (!entry) return entry.error();
  if (!entry.value()) return std::optional<std::pair<SecretHead, std::uint64_t>>{};
  auto head = parse_head(key, entry.value()->value);
  if (!head) return head.error();
  return std::optional<std::pair<SecretHead, std::uint64_t>>{
      std::pair{std::move(head.value()), entry.value()->revision}};
}

Result<Secret> SecretVault::read_value(const SecretHead& head, std::uint64_t version) {
  const std::string key = value_key(head.scope, head.name, version);
  auto entry = bucket_->get(key);
  if (!entry) return entry.error();
  if (!entry.value()) {
    return not_found(fmt::format("secret {} of {}: version {} has no stored value", head.name,
                                 head.scope, version));
  }
  auto record = parse_record(key, entry.value()->value);
  if (!record) return record.error();
  const auto k = keys();
  const MasterKey* key_for = nullptr;
  if (record.value().key_id == k.current->key_id()) key_for = k.current.get();
  if (k.previous && record.value().key_id == k.previous->key_id()) key_for = k.previous.get();
  if (key_for == nullptr) {
    return invalid_argument(
        fmt::format("vault entry {} is under master key {}, which this vault was not given", key,
                    record.value().key_id));
  }
  return decrypt_record(*key_for, key, head.generation, record.value());
}

Result<SecretHead> SecretVault::update_head(
    const std::string& scope, const std::string& name,
    const std::function<Result<bool>(SecretHead&)>& change) {
  for (int attempt = 0; attempt < options_.max_retries; ++attempt) {
    wait_after_conflict(attempt);
    auto read = read_head(scope, name);
    if (!read) return read.error();
    if (!read.value()) return not_found(fmt::format("no secret {} in scope {}", name, scope));
    auto [head, revision] = std::move(*read.value());
    auto changed = change(head);
    if (!changed) return changed.error();
    if (!changed.value()) return head;
    head.updated = clock_.now();
    auto written = bucket_->update(head_key(scope, name), encode_head(head), revision);
    if (written) return head;
    if (written.error().code != ErrorCode::conflict) return written.error();
  }
  return conflict(fmt::format("secret {} of {} keeps changing; try again", name, scope));
}

void SecretVault::prune(SecretHead& head, std::vector<std::uint64_t>& dropped) const {
  std::sort(head.versions.begin(), head.versions.end(),
            [](const VersionInfo& a, const VersionInfo& b) { return a.version < b.version; });
  const std::size_t keep = static_cast<std::size_t>(std::max(options_.keep_versions, 1));
  std::vector<VersionInfo> kept;
  for (std::size_t i = 0; i < head.versions.size(); ++i) {
    const auto& v = head.versions[i];
    const bool recent = head.versions.size() - i <= keep;
    if (recent || v.version == head.active || v.version == head.pending) {
      kept.push_back(v);
    } else {
      dropped.push_back(v.version);
    }
  }
  head.versions = std::move(kept);
}

void SecretVault::drop_values(const SecretHead& head, const std::vector<std::uint64_t>& versions) {
  // Best effort: a value left behind is still ciphertext, and no head names it any more.
  for (const auto v : versions) (void)bucket_->remove(value_key(head.scope, head.name, v));
}

Result<std::uint64_t> SecretVault::store_new(const std::string& scope, const std::string& name,
                                             const Secret& value, const std::string& source,
                                             bool pending, bool* unchanged) {
  auto valid = check_scope_and_name(scope, name);
  if (!valid) return valid.error();
  if (value.empty()) return invalid_argument(fmt::format("secret {}: the value is empty", name));
  const std::string hkey = head_key(scope, name);

  // Claim a version number first (a revision-checked head write), so two replicas never write
  // the same value record; a crash after the claim only skips a number.
  SecretHead head;
  std::uint64_t version = 0;
  for (int attempt = 0;; ++attempt) {
    if (attempt == options_.max_retries) {
      return conflict(fmt::format("secret {} of {} keeps changing; try again", name, scope));
    }
    wait_after_conflict(attempt);
    auto read = read_head(scope, name);
    if (!read) return read.error();
    Result<std::uint64_t> written{0};
    if (read.value()) {
      auto& [current, revision] = *read.value();
      if (!pending && current.active != 0) {
        auto active = read_value(current, current.active);
        if (!active && active.error().code != ErrorCode::not_found) return active.error();
        if (active && active.value().equals(value)) {
          *unchanged = true;
          return current.active;
        }
      }
      head = std::move(current);
      version = head.latest + 1;
      head.latest = version;
      written = bucket_->update(hkey, encode_head(head), revision);
    } else {
      head = SecretHead{};
      head.scope = scope;
      head.name = name;
      head.generation = random_hex(8);
      head.created = head.updated = clock_.now();
      version = head.latest = 1;
      written = bucket_->create(hkey, encode_head(head));
    }
    if (written) break;
    if (written.error().code != ErrorCode::conflict) return written.error();
  }

  const std::string vkey = value_key(scope, name, version);
  {
    // Encrypted and written before a master-key rotation can switch keys, so the rotation's
    // pass over the records sees every record written under the old key.
    std::shared_lock write(record_writes_);
    auto put = bucket_->put(vkey, encrypt_record(*keys().current, vkey, head.generation, value));
    if (!put) return put.error();
  }

  std::vector<std::uint64_t> dropped;
  const auto now = clock_.now();
  auto updated = update_head(scope, name, [&](SecretHead& h) -> Result<bool> {
    if (h.generation != head.generation) {
      return conflict(fmt::format("secret {} of {} was removed meanwhile", name, scope));
    }
    dropped.clear();
    if (h.find(version) == nullptr) h.versions.push_back({version, now, source});
    if (pending) {
      h.pending = version;
    } else if (version > h.active) {
      // A newer version set meanwhile by another replica stays active.
      h.active = version;
    }
    prune(h, dropped);
    return true;
  });
  if (!updated) return updated.error();
  drop_values(updated.value(), dropped);
  *unchanged = false;
  return version;
}

Result<SetResult> SecretVault::set(const std::string& scope, const std::string& name,
                                   const Secret& value, const std::string& source) {
  bool unchanged = false;
  auto version = store_new(scope, name, value, source, /*pending=*/false, &unchanged);
  if (!version) return version.error();
  if (!unchanged) notify({"set", scope, name, version.value()});
  return SetResult{version.value(), unchanged};
}

Result<std::uint64_t> SecretVault::put_pending(const std::string& scope, const std::string& name,
                                               const Secret& value, const std::string& source) {
  bool unchanged = false;
  auto version = store_new(scope, name, value, source, /*pending=*/true, &unchanged);
  if (!version) return version.error();
  notify({"pending", scope, name, version.value()});
  return version;
}

Result<Secret> SecretVault::get(const std::string& scope, const std::string& name,
                                std::uint64_t version) {
  auto read = read_head(scope, name);
  if (!read) return read.error();
  if (!read.value()) return not_found(fmt::format("no secret {} in scope {}", name, scope));
  const SecretHead& head = read.value()->first;
  const std::uint64_t v = version == 0 ? head.active : version;
  if (v == 0) return not_found(fmt::format("secret {} of {} has no active value", name, scope));
  if (head.find(v) == nullptr) {
    return not_found(fmt::format("secret {} of {} has no version {}", name, scope, v));
  }
  return read_value(head, v);
}

Result<Resolved> SecretVault::resolve(const std::string& repo, const std::string& name) {
  for (const std::string& scope : {repo, std::string{kOrgScope}}) {
    auto read = read_head(scope, name);
    if (!read) return read.error();
    if (!read.value() || read.value()->first.active == 0) continue;
    const SecretHead& head = read.value()->first;
    auto value = read_value(head, head.active);
    if (!value) return value.error();
    return Resolved{scope, head.active, std::move(value.value())};
  }
  return not_found(fmt::format("secret {} has no value for repo {} or the org", name, repo));
}

Result<SecretHead> SecretVault::head(const std::string& scope, const std::string& name) {
  auto read = read_head(scope, name);
  if (!read) return read.error();
  if (!read.value()) return not_found(fmt::format("no secret {} in scope {}", name, scope));
  return std::move(read.value()->first);
}

Result<std::vector<VersionInfo>> SecretVault::history(const std::string& scope,
                                                      const std::string& name) {
  auto h = head(scope, name);
  if (!h) return h.error();
  return std::move(h.value().versions);
}

Result<std::vector<SecretHead>> SecretVault::list() {
  auto keys = bucket_->keys("head.>");
  if (!keys) return keys.error();
  std::vector<SecretHead> heads;
  for (const auto& key : keys.value()) {
    auto entry = bucket_->get(key);
    if (!entry) return entry.error();
    if (!entry.value()) continue;  // removed meanwhile
    auto head = parse_head(key, entry.value()->value);
    if (!head) return head.error();
    heads.push_back(std::move(head.value()));
  }
  std::sort(heads.begin(), heads.end(), [](const SecretHead& a, const SecretHead& b) {
    return std::tie(a.scope, a.name) < std::tie(b.scope, b.name);
  });
  return heads;
}

Result<Ok> SecretVault::remove(const std::string& scope, const std::string& name) {
  auto valid = check_scope_and_name(scope, name);
  if (!valid) return valid.error();
  auto h = head(scope, name);
  if (!h) return h.error();
  // The head first: from then on no reader finds a value, and the generation it carried makes
  // the records below unopenable even if one is left behind.
  auto removed = bucket_->remove(head_key(scope, name));
  if (!removed) return removed.error();
  auto values = bucket_->keys("value." + kv_token(scope) + "." + kv_token(name) + ".*");
  if (values) {
    for (const auto& key : values.value()) (void)bucket_->remove(key);
  }
  notify({"remove", scope, name, 0});
  return Ok{};
}

Result<Ok> SecretVault::activate(const std::string& scope, const std::string& name,
                                 std::uint64_t version) {
  std::vector<std::uint64_t> dropped;
  auto updated = update_head(scope, name, [&](SecretHead& h) -> Result<bool> {
    if (h.find(version) == nullptr) {
      return not_found(fmt::format("secret {} of {} has no version {}", name, scope, version));
    }
    dropped.clear();
    if (h.active == version && h.pending != version) return false;
    h.active = version;
    if (h.pending == version) h.pending = 0;
    prune(h, dropped);
    return true;
  });
  if (!updated) return updated.error();
  drop_values(updated.value(), dropped);
  notify({"activate", scope, name, version});
  return Ok{};
}

Result<Ok> SecretVault::retire(const std::string& scope, const std::string& name,
                               std::uint64_t version) {
  bool was_there = false;
  auto updated = update_head(scope, name, [&](SecretHead& h) -> Result<bool> {
    if (version == h.active || version == h.pending) {
      return invalid_argument(fmt::format("secret {} of {}: version {} is {}; it cannot be retired",
                                          name, scope, version,
                                          version == h.active ? "active" : "pending"));
    }
    const auto it = std::find_if(h.versions.begin(), h.versions.end(),
                                 [&](const VersionInfo& v) { return v.version == version; });
    was_there = it != h.versions.end();
    if (!was_there) return false;
    h.versions.erase(it);
    return true;
  });
  if (!updated) return updated.error();
  drop_values(updated.value(), {version});
  if (was_there) notify({"retire", scope, name, version});
  return Ok{};
}

Result<std::vector<SecretVault::ExportedSecret>> SecretVault::export_all() {
  auto heads = list();
  if (!heads) return heads.error();
  std::vector<ExportedSecret> out;
  out.reserve(heads.value().size());
  for (auto& head : heads.value()) {
    ExportedSecret exported;
    for (const auto& v : head.versions) {
      auto value = read_value(head, v.version);
      if (!value) return value.error();
      exported.values.emplace_back(v.version, std::move(value.value()));
    }
    exported.head = std::move(head);
    out.push_back(std::move(exported));
  }
  return out;
}

Result<std::size_t> SecretVault::rotate_master_key(MasterKey new_key) {
  const std::string meta_key{kMetaKey};
  auto next = std::make_shared<MasterKey>(std::move(new_key));
  const auto start = keys();
  if (next->key_id() != start.current->key_id()) {
    // Begin: meta.key names the new key and the one being left, before any record changes.
    // Record writes in flight finish first (under the old key, so the pass below sees them).
    std::unique_lock no_writes(record_writes_);
    auto stored = bucket_->get(meta_key);
    if (!stored) return stored.error();
    if (!stored.value()) return not_found("vault record meta.key is missing");
    auto meta = parse_meta(stored.value()->value);
    if (!meta) return meta.error();
    if (meta.value().key_id != start.current->key_id()) {
      return conflict(
          fmt::format("the vault's master key changed to {} meanwhile", meta.value().key_id));
    }
    if (!meta.value().previous.empty()) {
      return conflict(
          fmt::format("a master key rotation from {} is not finished yet: finish it "
                      "first (open with both keys and rotate again)",
                      meta.value().previous));
    }
    auto updated = bucket_->update(meta_key, meta_json({next->key_id(), start.current->key_id()}),
                                   stored.value()->revision);
    if (!updated) return updated.error();
    std::lock_guard lock(keys_mutex_);
    keys_ = Keys{next, start.current};
  }
  const auto k = keys();
  // Every value record in KV, not only those the heads list: a record written just before the
  // keys switched may not be in its head's versions yet.
  auto value_keys = bucket_->keys("value.>");
  if (!value_keys) return value_keys.error();
  std::sort(value_keys.value().begin(), value_keys.value().end());
  std::map<std::string, std::optional<SecretHead>> heads;  // by head key
  std::size_t rewritten = 0;
  for (const auto& vkey : value_keys.value()) {
    // value.<scope>.<name>.<version>: tokens hold no '.', so the head key is the middle two.
    const auto last_dot = vkey.rfind('.');
    const std::string hkey = "head." + vkey.substr(6, last_dot - 6);
    std::uint64_t version = 0;
    try {
      version = std::stoull(vkey.substr(last_dot + 1));
    } catch (const std::exception&) {
      continue;  // not a record this vault writes
    }
    if (!heads.contains(hkey)) {
      auto entry = bucket_->get(hkey);
      if (!entry) return entry.error();
      std::optional<SecretHead> head;
      if (entry.value()) {
        auto parsed = parse_head(hkey, entry.value()->value);
        if (!parsed) return parsed.error();
        head = std::move(parsed.value());
      }
      heads.emplace(hkey, std::move(head));
    }
    const std::optional<SecretHead>& head = heads.at(hkey);
    if (!head) continue;  // left behind by a removal: no head, it never opens again
    for (int attempt = 0;; ++attempt) {
      if (attempt == options_.max_retries) {
        return conflict(fmt::format("vault entry {} keeps changing; rotate again", vkey));
      }
      wait_after_conflict(attempt);
      auto entry = bucket_->get(vkey);
      if (!entry) return entry.error();
      if (!entry.value()) break;  // retired meanwhile
      auto record = parse_record(vkey, entry.value()->value);
      if (!record) return record.error();
      if (record.value().key_id == k.current->key_id()) break;
      if (!k.previous || record.value().key_id != k.previous->key_id()) {
        return invalid_argument(
            fmt::format("vault entry {} is under master key {}, which this rotation was not given",
                        vkey, record.value().key_id));
      }
      auto value = decrypt_record(*k.previous, vkey, head->generation, record.value());
      if (!value) {
        // A record of the head's versions that does not open is damage; one it does not list
        // (and cannot open) is a leftover of an earlier generation.
        if (head->find(version) == nullptr) break;
        return value.error();
      }
      auto written =
          bucket_->update(vkey, encrypt_record(*k.current, vkey, head->generation, value.value()),
                          entry.value()->revision);
      if (written) {
        ++rewritten;
        break;
      }
      if (written.error().code != ErrorCode::conflict) return written.error();
    }
  }
  // Every record is under the new key: the rotation is over.
  for (int attempt = 0; attempt < options_.max_retries; ++attempt) {
    wait_after_conflict(attempt);
    auto stored = bucket_->get(meta_key);
    if (!stored) return stored.error();
    if (!stored.value()) return not_found("vault record meta.key is missing");
    auto meta = parse_meta(stored.value()->value);
    if (!meta) return meta.error();
    if (meta.value().key_id != k.current->key_id()) {
      return conflict(
          fmt::format("the vault's master key changed to {} meanwhile", meta.value().key_id));
    }
    if (meta.value().previous.empty()) break;
    auto updated =
        bucket_->update(meta_key, meta_json({k.current->key_id(), ""}), stored.value()->revision);
    if (updated) break;
    if (updated.error().code != ErrorCode::conflict) return updated.error();
  }
  {
    std::lock_guard lock(keys_mutex_);
    keys_.previous.reset();
  }
  notify({"rotate_master_key", "", "", 0});
  return rewritten;
}

VaultRepoSecrets::VaultRepoSecrets(std::shared_ptr<SecretVault> vault,
                                   std::map<std::string, std::vector<std::string>> names_by_repo)
    : vault_(std::move(vault)), names_by_repo_(std::move(names_by_repo)) {}

VaultRepoSecrets::VaultRepoSecrets(std::shared_ptr<SecretVault> vault,
                                   const std::map<std::string, RepoConfig>& repos)
    : vault_(std::move(vault)) {
  for (const auto& [name, repo] : repos) {
    if (!repo.secrets.empty()) names_by_repo_[name] = repo.secrets;
  }
}

Result<std::vector<NamedSecret>> VaultRepoSecrets::secrets_for(const std::string& repo) {
  std::vector<NamedSecret> out;
  const auto it = names_by_repo_.find(repo);
  if (it == names_by_repo_.end()) return out;
  for (const auto& name : it->second) {
    auto resolved = vault_->resolve(repo, name);
    if (!resolved) return resolved.error();
    out.push_back({name, std::move(resolved.value().value)});
  }
  return out;
}

}  // namespace orgd::secrets
