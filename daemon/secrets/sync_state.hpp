#pragma once

// What orgd remembers of its pushes, in KV bucket `orgd_sync` (DESIGN.md §4, §9): per target and
// secret name, a keyed digest of the value last pushed (never the value), when, its vault
// version and scope, and the target's own update time as seen after the push. And a claim per
// target that one replica holds while it applies a sync there, so two replicas never push the
// same change twice. docs/secret-sync.md has the key layout and why it is one record per name.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::secrets {

inline constexpr std::size_t kDigestKeyBytes = 32;

// A target's id: lowercase hex of a BLAKE2b-128 of the provider instance's name and the target's
// describe(). Stable across config reordering (it does not depend on the target's place in a
// list) and a valid KV key token.
std::string target_id(std::string_view provider, std::string_view description);

// Lowercase hex of a BLAKE2b-256 keyed with `digest_key` (32 bytes) over the target id, the name
// and the value, each length-prefixed: equal values at two targets digest differently, and a
// digest says nothing of a value without the key. invalid_argument for a key of the wrong size.
Result<std::string> secret_digest(const Secret& digest_key, std::string_view target_id,
                                  std::string_view name, const Secret& value);

struct SyncRecord {
  std::string digest;  // secret_digest() of the value pushed
  std::uint64_t version = 0;
  std::string scope;
  Clock::time_point pushed_at;
  // The target's updated_at for the name as listed after the push; unset when the target does
  // not show one or the listing after the push failed.
  std::optional<Clock::time_point> target_updated_at;
};

struct StoredRecord {
  SyncRecord record;
  std::uint64_t revision = 0;  // the KV revision, for the next revision-checked write
};

// A target's records by secret name.
using TargetRecords = std::map<std::string, StoredRecord>;

// One replica's hold on a target while it applies a sync there.
struct SyncClaim {
  std::string target_id;
  std::string owner;
  Clock::time_point until;
  std::uint64_t revision = 0;
};

// The KV key of a name's record: `<target_id>.<name>` when the name is a key token
// ([A-Za-z0-9_-]), else `<target_id>.=<hex of the name>`; and back (nullopt: not a record key of
// this shape).
std::string record_key(std::string_view target_id, std::string_view name);
std::optional<std::string> record_name(std::string_view target_id, std::string_view key);
// `claim.<target_id>`: outside the `<target_id>.>` records.
std::string claim_key(std::string_view target_id);

class SyncState {
 public:
  // `bucket` (orgd_sync) and `clock` outlive this.
  SyncState(KvBucket& bucket, const Clock& clock) : bucket_(bucket), clock_(clock) {}

  // Every record of a target: one keys() listing of `<target_id>.>`, then one get per key.
  Result<TargetRecords> load(const std::string& target_id);
  // Writes a name's record: created when `revision` is 0, else updated only at that revision
  // (conflict when someone else wrote it meanwhile). The new revision.
  Result<std::uint64_t> save(const std::string& target_id, const std::string& name,
                             const SyncRecord& record, std::uint64_t revision);
  Result<Ok> drop(const std::string& target_id, const std::string& name);

  // Takes the target's claim for `ttl` when it is free, expired, or already `owner`'s; conflict
  // naming the holder otherwise (or when another replica took it between the read and the write).
  Result<SyncClaim> claim(const std::string& target_id, const std::string& owner, Duration ttl);
  // Extends a held claim; conflict when it was lost (expired and taken over).
  Result<SyncClaim> renew(const SyncClaim& claim, Duration ttl);
  // Gives it up (written as expired, revision-checked, so a claim taken over is left alone).
  Result<Ok> release(const SyncClaim& claim);

 private:
  KvBucket& bucket_;
  const Clock& clock_;
};

// JSON of a record as stored (for tests and `orgctl secrets list`), and back.
std::string encode_record(const SyncRecord& record);
Result<SyncRecord> decode_record(std::string_view text);

}  // namespace orgd::secrets
