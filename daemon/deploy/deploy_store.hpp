#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::deploy {

// Bucket names (DESIGN.md §4).
inline constexpr const char* kDeploysBucket = "orgd_deploys";
inline constexpr const char* kLocksBucket = "orgd_locks";
inline constexpr const char* kLeasesBucket = "orgd_leases";
// The leases key of the scheduler (sweeps and resumes run on its holder).
inline constexpr const char* kSchedulerLease = "scheduler";

// Opens (creates, or updates) a KV bucket: KvBucket::open on a JetStream context in orgd,
// MemoryKvStore::open in tests.
using BucketOpener = std::function<Result<std::unique_ptr<KvBucket>>(const BucketSpec&)>;

// The three buckets, as orgd opens them: deploy records kept for `history`, leases that expire
// `lease_ttl` after their last renewal, locks that never expire.
struct DeployBucketSpecs {
  BucketSpec deploys;
  BucketSpec locks;
  BucketSpec leases;
};
DeployBucketSpecs deploy_bucket_specs(Duration history, Duration lease_ttl, int replicas);

struct StoredRecord {
  v1::DeployRecord record;
  std::uint64_t revision = 0;  // the header's
  // One per step of `record`: the revision of the step's own key; 0 when it has none (a record
  // stored whole, as orgd did before steps had keys, or a step not loaded).
  std::vector<std::uint64_t> step_revisions;
};

// Where deploys live in JetStream KV:
//   orgd_deploys  deploy.<id>      the record's header: DeployRecord (binary protobuf) without
//                                  its steps, total_steps saying how many there are
//                 deploy.<id>.step.<i>  its step i (DeployStep, binary protobuf)
//                 active.<id>      present while the deploy is not finished
//                 request.<hash>   the deploy a request id created (idempotency)
//   orgd_locks    <repo>.<env>     the id of the deploy holding that repo+env
//   orgd_leases   scheduler        the replica running sweeps and resumes
//                 deploy.<id>      the replica running that deploy
// Every key is written compare-and-set on its own revision, so one step's change writes that step
// and the header (a few hundred bytes), never the whole record: what a deploy writes grows with
// its repos, and no stored value grows with them. A change writes its steps first and the header
// last: the header's revision is what replicas race on (a cancel, a takeover), and a crash in
// between leaves steps ahead of the header, which a resume reads as they are. A record stored
// whole (total_steps 0, steps inline: orgd before steps had keys) is read as it is and split at
// its next write.
// Lease entries expire (bucket ttl) unless their holder renews them. Locks do not expire on
// their own: a lock whose deploy has finished (or is gone) counts as free.
class DeployStore {
 public:
  // Over any buckets: JetStream's in orgd, memory ones (MemoryKvStore) in tests. `clock` tells
  // the age of a lock, and must run as the buckets' own (the one a MemoryKvStore was given).
  DeployStore(std::unique_ptr<KvBucket> deploys, std::unique_ptr<KvBucket> locks,
              std::unique_ptr<KvBucket> leases, const Clock& clock = system_clock());

  // Opens (creates or updates) the three buckets through `open` and makes a store over them.
  static Result<std::unique_ptr<DeployStore>> open(const BucketOpener& open,
                                                   const DeployBucketSpecs& specs,
                                                   const Clock& clock);

  // The header and every step.
  Result<std::optional<StoredRecord>> load(const std::string& deploy_id);
  // The header and at most `steps` of the first steps (record.total_steps says how many there
  // are): what a list or a runner's conflict needs, without reading a deploy of thousands of
  // repos whole. A record stored whole is read whole.
  Result<std::optional<StoredRecord>> load_head(const std::string& deploy_id, int steps);
  // Step `index` as stored, with its revision; nullopt when it has no key.
  Result<std::optional<KvEntry>> load_step(const std::string& deploy_id, int index);
  // The steps, then the header (conflict when a deploy of that id exists).
  Result<std::uint64_t> create(const v1::DeployRecord& record);
  // The header alone (the record's steps are not written): what a replica that does not run the
  // deploy changes (a cancel request, an owner). conflict when someone else wrote the header
  // since `revision`. A record stored whole is written whole.
  Result<std::uint64_t> update(const v1::DeployRecord& record, std::uint64_t revision);
  // One step, compare-and-set on `revision` (0: the key must not exist yet).
  Result<std::uint64_t> update_step(const std::string& deploy_id, int index,
                                    const v1::DeployStep& step, std::uint64_t revision);
  // The header of a record whose steps are under their own keys: `record`'s own steps are not
  // written (it may hold none or a few); `total_steps` is stored with it.
  Result<std::uint64_t> update_header(const v1::DeployRecord& record, int total_steps,
                                      std::uint64_t revision);
  // A change of the steps at `changed` (indexes into record.steps(), which holds them all) and
  // the header, written in that order, each compare-and-set on `stored`'s revisions, which are
  // moved on as each write lands; a record stored whole has all its steps written. conflict
  // when a key was written by someone else since.
  Result<std::uint64_t> update(const v1::DeployRecord& record, const std::vector<int>& changed,
                               StoredRecord& stored);

  // Idempotency: the deploy a request id created, and claiming a request id for a deploy
  // (conflict when another deploy claimed it first).
  Result<std::optional<std::string>> deploy_of_request(const std::string& request_id);
  // The claim itself (value: the deploy id; created: when it was claimed), to tell a deploy
  // being accepted right now from one whose orgd died before writing its record.
  Result<std::optional<KvEntry>> request_claim(const std::string& request_id);
  Result<Ok> claim_request(const std::string& request_id, const std::string& deploy_id);
  Result<Ok> release_request(const std::string& request_id);

  Result<Ok> mark_active(const std::string& deploy_id);
  Result<Ok> clear_active(const std::string& deploy_id);
  Result<std::vector<std::string>> active_ids();
  // Every stored deploy id, oldest first (ids sort by creation time).
  Result<std::vector<std::string>> deploy_ids();

  // Takes the lock of each repo+env for `deploy_id`, all or none. A lock held by a deploy
  // that has finished (or no longer exists) is taken over; one held by a live deploy gives
  // conflict naming it: "api/production is locked by deploy <id>".
  Result<Ok> acquire_locks(const std::vector<std::string>& repos, const std::string& env,
                           const std::string& deploy_id);
  // Checks, when a deploy is resumed, that it still holds its locks, re-taking any that are
  // missing. Returns the repos whose lock another deploy holds now.
  Result<std::vector<std::string>> check_locks(const std::vector<std::string>& repos,
                                               const std::string& env,
                                               const std::string& deploy_id);
  void release_locks(const std::vector<std::string>& repos, const std::string& env,
                     const std::string& deploy_id);
  // Deletes the locks without reading them first: only for a deploy that still holds them
  // (not finished, so none can have been taken over).
  void drop_locks(const std::vector<std::string>& repos, const std::string& env);
  Result<std::optional<std::string>> lock_holder(const std::string& repo, const std::string& env);

  // Leases: conflict when another holder has it.
  Result<std::uint64_t> acquire_lease(const std::string& key, const std::string& holder);
  // Renews a lease held since `revision`; conflict when it was lost.
  Result<std::uint64_t> renew_lease(const std::string& key, const std::string& holder,
                                    std::uint64_t revision);
  void release_lease(const std::string& key, const std::string& holder);
  Result<std::optional<std::string>> lease_holder(const std::string& key);

  static std::string deploy_lease(const std::string& deploy_id) { return "deploy." + deploy_id; }

  KvBucket& deploys() { return *deploys_; }

 private:
  std::unique_ptr<KvBucket> deploys_;
  std::unique_ptr<KvBucket> locks_;
  std::unique_ptr<KvBucket> leases_;
  const Clock& clock_;
};

// A deploy id: sortable by creation time, a valid subject token and KV key
// ("20261126-091500-3f9a2c1d").
std::string new_deploy_id(std::chrono::system_clock::time_point now);

}  // namespace orgd::deploy
