#pragma once

// Secret rotation (DESIGN.md §9, secrets.rotation): generate → push to every target → verify →
// activate → retire the old value after `overlap`. Each rotation is a record in KV
// (`rotation.<scope>.<name>` in orgd_sync: names, versions, phases, never a value), advanced one
// revision-checked step at a time, so a rotation survives a SIGKILL of orgd and is finished by
// whichever orgd holds the scheduler lease next. The old value stays active until every target
// has the new one; a target that fails is retried with backoff and reported as behind.
//
// The engine sees the vault, the sync engine and the issuers through the small interfaces
// below, so it is tested with fakes and wired to the real ones by the daemon.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/plugin/provider.hpp"

namespace orgd::secrets {

// What rotation needs of the vault.
class RotationVault {
 public:
  virtual ~RotationVault() = default;
  // The active version and when it became active; nullopt when the secret has no value.
  struct Active {
    std::uint64_t version = 0;
    Clock::time_point since;
  };
  virtual Result<std::optional<Active>> active(const std::string& scope,
                                               const std::string& name) = 0;
  // Stores `value` as a new version that is not yet active; the sync engine pushes a pending
  // version in place of the active one. Replaces an earlier pending version.
  virtual Result<std::uint64_t> put_pending(const std::string& scope, const std::string& name,
                                            Secret value) = 0;
  virtual Result<Ok> activate(const std::string& scope, const std::string& name,
                              std::uint64_t version) = 0;
  // Drops the value of an old version (it can no longer be pushed or restored from history).
  virtual Result<Ok> retire(const std::string& scope, const std::string& name,
                            std::uint64_t version) = 0;
};

// What rotation needs of the sync engine: push `name` of `scope` (its newest version: the
// pending one) to every target that gets it, and say which targets still lack it.
struct PushOutcome {
  std::vector<std::string> targets;  // every target of the name, by description
  std::vector<std::string> behind;   // those without the new value
  std::string error;                 // the first failure's message (no values)
  // The earliest a retry makes sense (a rate limit), if a target said so.
  std::chrono::milliseconds retry_after{0};
};
using RotationPush =
    std::function<Result<PushOutcome>(const std::string& scope, const std::string& name)>;

// One rotation's audit event (P.events.secrets.<name>.<kind>): kind is requested, generated,
// pushed, behind, active, retired, failed. Names, versions and targets only.
struct RotationEvent {
  std::string kind;
  std::string name;
  std::string scope;
  std::string rotation_id;
  std::string actor;
  std::uint64_t version = 0;
  std::vector<std::string> targets;
  std::string error;
};
using RotationEvents = std::function<void(const RotationEvent&)>;

// The persistent state of one rotation, as stored (JSON).
struct RotationRecord {
  enum class Phase { requested, pushing, active, retired, failed };
  std::string id;
  std::string name;
  std::string scope;
  Phase phase = Phase::requested;
  std::string actor;
  std::string reason;
  std::string request_id;
  std::uint64_t old_version = 0;
  std::uint64_t new_version = 0;
  // An issued credential's id (the new one), and the one it replaces (revoked at retirement).
  std::string issued_id;
  std::string old_issued_id;
  std::vector<std::string> behind;
  std::string error;
  int attempts = 0;  // failed pushes so far
  // The push reached every target once; the next push (a listing of each) verifies it.
  bool pushed = false;
  Clock::time_point requested_at{};
  Clock::time_point next_attempt_at{};
  Clock::time_point activated_at{};
  Clock::time_point retire_at{};
  Clock::time_point finished_at{};

  bool finished() const { return phase == Phase::retired || phase == Phase::failed; }
};

std::string phase_name(RotationRecord::Phase phase);
std::string encode_rotation(const RotationRecord& record);
Result<RotationRecord> decode_rotation(const std::string& json);

struct RotationRequest {
  std::string name;
  std::string scope;  // empty: the policy's default (org, unless only a repo has the secret)
  std::string actor;
  std::string reason;
  std::string request_id;
};

class RotationEngine {
 public:
  struct Options {
    // Backoff after a failed push: first, doubling, capped.
    std::chrono::milliseconds first_backoff{std::chrono::seconds{5}};
    std::chrono::milliseconds max_backoff{std::chrono::minutes{10}};
    // A rotation whose push keeps failing for this long is given up (the old value stays).
    std::chrono::milliseconds give_up_after{std::chrono::hours{24}};
  };

  // What the engine works with: the policies (secrets.rotation), the repos that list each
  // secret (repos.<name>.secrets: where a secret without an org value lives), the vault, the
  // state bucket (orgd_sync), the sync engine's push, the providers' issuers by provider name.
  struct Parts {
    std::map<std::string, RotationPolicyConfig> policies;
    std::map<std::string, std::vector<std::string>> repos_of_name;
    RotationVault* vault = nullptr;
    KvBucket* state = nullptr;
    RotationPush push;
    std::map<std::string, CredentialIssuer*> issuers;
    const Clock* clock = nullptr;
    RotationEvents events;
  };

  RotationEngine(Parts parts, Options options);
  explicit RotationEngine(Parts parts) : RotationEngine(std::move(parts), Options{}) {}

  // Records a rotation (P.api.secrets.rotate, P.cmd.secrets.rotate): the one in progress for
  // the secret when there is one (a repeated request changes nothing), else a new record.
  // not_found for a secret without a rotation policy; invalid_argument for a bad scope.
  Result<RotationRecord> request(const RotationRequest& request);
  // The current record of a secret's rotation (finished or not).
  Result<std::optional<RotationRecord>> get(const std::string& scope, const std::string& name);

  // One pass, on the scheduler lease holder: rotations due by max_age are requested, and every
  // unfinished rotation is advanced as far as it can go now. Returns the number advanced.
  std::size_t tick();
  // Advances one rotation as far as it can go now (also what tick() does for each).
  Result<RotationRecord> advance(const std::string& scope, const std::string& name);

 private:
  std::string key_of(const std::string& scope, const std::string& name) const;
  Result<std::string> default_scope(const std::string& name);
  void request_due();
  // One step; false when nothing more can be done now.
  Result<bool> step(RotationRecord& record, std::uint64_t& revision);
  Result<bool> generate(RotationRecord& record, std::uint64_t& revision);
  Result<bool> push(RotationRecord& record, std::uint64_t& revision);
  Result<bool> retire(RotationRecord& record, std::uint64_t& revision);
  void give_up(RotationRecord& record, std::uint64_t& revision, std::string why);
  void emit(const RotationRecord& record, const std::string& kind,
            std::vector<std::string> targets = {});

  std::chrono::milliseconds backoff(int attempts, std::chrono::milliseconds at_least) const;
  Result<Ok> save(RotationRecord& record, std::uint64_t& revision);

  Parts parts_;
  Options options_;
  // One tick or advance at a time in this orgd (KV revisions guard against other replicas).
  std::mutex mutex_;
};

}  // namespace orgd::secrets
