#include "daemon/secrets/sync_state.hpp"

#include <sodium.h>

#include <array>
#include <nlohmann/json.hpp>
#include <vector>

#include "daemon/core/ascii.hpp"

namespace orgd::secrets {
namespace {

using json = nlohmann::json;

std::string to_hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0x0f]);
  }
  return out;
}

// A field length-prefixed (8 bytes, little endian), so ("ab", "c") and ("a", "bc") differ.
void absorb(crypto_generichash_state& state, std::string_view field) {
  std::array<unsigned char, 8> size{};
  auto n = static_cast<std::uint64_t>(field.size());
  for (auto& b : size) {
    b = static_cast<unsigned char>(n & 0xff);
    n >>= 8;
  }
  crypto_generichash_update(&state, size.data(), size.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(field.data()),
                            field.size());
}

bool is_key_token(std::string_view name) {
  if (name.empty()) return false;
  for (const char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::int64_t millis(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Clock::time_point from_millis(std::int64_t ms) {
  return Clock::time_point{
      std::chrono::duration_cast<Clock::time_point::duration>(std::chrono::milliseconds{ms})};
}

std::string encode_claim(const std::string& owner, Clock::time_point until) {
  return json{{"owner", owner}, {"until_ms", millis(until)}}.dump();
}

std::optional<std::pair<std::string, Clock::time_point>> decode_claim(const std::string& text) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("owner") || !j["owner"].is_string() ||
      !j.contains("until_ms") || !j["until_ms"].is_number_integer()) {
    return std::nullopt;
  }
  return std::make_pair(j["owner"].get<std::string>(),
                        from_millis(j["until_ms"].get<std::int64_t>()));
}

}  // namespace

std::string target_id(std::string_view provider, std::string_view description) {
  crypto_generichash_state state;
  std::array<unsigned char, 16> out{};
  crypto_generichash_init(&state, nullptr, 0, out.size());
  absorb(state, provider);
  absorb(state, description);
  crypto_generichash_final(&state, out.data(), out.size());
  return to_hex(out.data(), out.size());
}

Result<std::string> secret_digest(const Secret& digest_key, std::string_view target_id,
                                  std::string_view name, const Secret& value) {
  if (digest_key.size() != kDigestKeyBytes) {
    return invalid_argument("the sync digest key must be 32 bytes");
  }
  crypto_generichash_state state;
  std::array<unsigned char, 32> out{};
  crypto_generichash_init(&state,
                          reinterpret_cast<const unsigned char*>(digest_key.expose().data()),
                          digest_key.size(), out.size());
  absorb(state, target_id);
  absorb(state, name);
  absorb(state, value.expose());
  crypto_generichash_final(&state, out.data(), out.size());
  sodium_memzero(&state, sizeof state);
  return to_hex(out.data(), out.size());
}

std::string record_key(std::string_view target_id, std::string_view name) {
  std::string key{target_id};
  key.push_back('.');
  if (is_key_token(name)) {
    key.append(name);
  } else {
    key.push_back('=');
    key += to_hex(reinterpret_cast<const unsigned char*>(name.data()), name.size());
  }
  return key;
}

std::optional<std::string> record_name(std::string_view target_id, std::string_view key) {
  if (key.size() <= target_id.size() + 1 || key.substr(0, target_id.size()) != target_id ||
      key[target_id.size()] != '.') {
    return std::nullopt;
  }
  const std::string_view rest = key.substr(target_id.size() + 1);
  if (rest.front() != '=') {
    if (!is_key_token(rest)) return std::nullopt;
    return std::string{rest};
  }
  const std::string_view hex = rest.substr(1);
  if (hex.empty() || hex.size() % 2 != 0) return std::nullopt;
  std::string name;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = hex_digit(hex[i]);
    const int lo = hex_digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    name.push_back(static_cast<char>(hi * 16 + lo));
  }
  return name;
}

std::string claim_key(std::string_view target_id) { return "claim." + std::string{target_id}; }

std::string encode_record(const SyncRecord& record) {
  json j{{"digest", record.digest},
         {"version", record.version},
         {"scope", record.scope},
         {"pushed_at_ms", millis(record.pushed_at)}};
  if (record.target_updated_at) j["target_updated_at_ms"] = millis(*record.target_updated_at);
  return j.dump();
}

Result<SyncRecord> decode_record(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string() ||
      !j.contains("pushed_at_ms") || !j["pushed_at_ms"].is_number_integer()) {
    return internal_error("a sync record is not of the expected shape");
  }
  SyncRecord r;
  r.digest = j["digest"].get<std::string>();
  if (j.contains("version") && j["version"].is_number_unsigned()) {
    r.version = j["version"].get<std::uint64_t>();
  }
  if (j.contains("scope") && j["scope"].is_string()) r.scope = j["scope"].get<std::string>();
  r.pushed_at = from_millis(j["pushed_at_ms"].get<std::int64_t>());
  if (j.contains("target_updated_at_ms") && j["target_updated_at_ms"].is_number_integer()) {
    r.target_updated_at = from_millis(j["target_updated_at_ms"].get<std::int64_t>());
  }
  return r;
}

Result<TargetRecords> SyncState::load(const std::string& target_id) {
  auto keys = bucket_.keys(target_id + ".>");
  if (!keys) return keys.error();
  TargetRecords records;
  for (const auto& key : keys.value()) {
    auto name = record_name(target_id, key);
    if (!name) continue;  // not ours to read
    auto entry = bucket_.get(key);
    if (!entry) return entry.error();
    if (!entry.value()) continue;  // dropped since the listing
    auto record = decode_record(entry.value()->value);
    // A record that cannot be read is treated as absent: the name is pushed again and the
    // record rewritten at its revision, which is the safe way out.
    if (!record) {
      records[*name] = StoredRecord{SyncRecord{}, entry.value()->revision};
      continue;
    }
    records[*name] = StoredRecord{std::move(record.value()), entry.value()->revision};
  }
  return records;
}

Result<std::uint64_t> SyncState::save(const std::string& target_id, const std::string& name,
                                      const SyncRecord& record, std::uint64_t revision) {
  const std::string key = record_key(target_id, name);
  const std::string value = encode_record(record);
  return revision == 0 ? bucket_.create(key, value) : bucket_.update(key, value, revision);
}

Result<Ok> SyncState::drop(const std::string& target_id, const std::string& name) {
  return bucket_.remove(record_key(target_id, name));
}

Result<SyncClaim> SyncState::claim(const std::string& target_id, const std::string& owner,
                                   Duration ttl) {
  const std::string key = claim_key(target_id);
  const auto now = clock_.now();
  auto current = bucket_.get(key);
  if (!current) return current.error();
  SyncClaim claim{target_id, owner, now + ttl, 0};
  const std::string value = encode_claim(owner, claim.until);
  Result<std::uint64_t> written = std::uint64_t{0};
  if (!current.value()) {
    written = bucket_.create(key, value);
  } else {
    const auto held = decode_claim(current.value()->value);
    if (held && held->first != owner && held->second > now) {
      return conflict("target " + target_id + " is being synced by " + held->first);
    }
    written = bucket_.update(key, value, current.value()->revision);
  }
  if (!written) {
    if (written.error().code == ErrorCode::conflict) {
      return conflict("target " + target_id + " was claimed by another replica");
    }
    return written.error();
  }
  claim.revision = written.value();
  return claim;
}

Result<SyncClaim> SyncState::renew(const SyncClaim& claim, Duration ttl) {
  SyncClaim renewed = claim;
  renewed.until = clock_.now() + ttl;
  auto written = bucket_.update(claim_key(claim.target_id),
                                encode_claim(claim.owner, renewed.until), claim.revision);
  if (!written) {
    if (written.error().code == ErrorCode::conflict) {
      return conflict("the claim on target " + claim.target_id + " was lost");
    }
    return written.error();
  }
  renewed.revision = written.value();
  return renewed;
}

Result<Ok> SyncState::release(const SyncClaim& claim) {
  auto written = bucket_.update(claim_key(claim.target_id),
                                encode_claim(claim.owner, Clock::time_point{}), claim.revision);
  if (!written) return written.error();
  return Ok{};
}

}  // namespace orgd::secrets
