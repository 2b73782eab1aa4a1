#include "daemon/deploy/deploy_store.hpp"

#include "daemon/deploy/deploy_state.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>

namespace orgd::deploy {

namespace {

// How old a lock whose deploy has no record must be to count as left behind.
constexpr std::chrono::seconds kOrphanLockAge{30};

std::string record_key(const std::string& id) { return "deploy." + id; }
std::string step_key(const std::string& id, int index) {
  return "deploy." + id + ".step." + std::to_string(index);
}

// The header as stored: the record without its steps. (The record a run writes holds only the
// steps it changed, so this copy is small where it counts.)
std::string header_bytes(const v1::DeployRecord& record, int total_steps) {
  v1::DeployRecord header = record;
  header.clear_steps();
  header.set_total_steps(total_steps);
  header.clear_next_cursor();
  return header.SerializeAsString();
}

// A step's index from its key ("deploy.<id>.step.<i>"); -1 when it is not one.
int step_index(const std::string& key) {
  const auto dot = key.rfind('.');
  if (dot == std::string::npos || dot + 1 >= key.size()) return -1;
  int index = 0;
  for (std::size_t i = dot + 1; i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9' || index > 10'000'000) return -1;
    index = index * 10 + (key[i] - '0');
  }
  return index;
}
// A header whose step `index` has no key. Every key of a deploy ages out of the bucket's history
// on its own, counted from its last write, so a finished deploy's steps written before its
// header's last write expire a little earlier: such a deploy has expired. A deploy that is not
// finished does not lose steps that way: that is damage, and said so.
Result<std::optional<StoredRecord>> missing_step(const StoredRecord& stored, int index) {
  if (is_terminal(stored.record.state())) return std::optional<StoredRecord>{};
  return internal_error(fmt::format("deploy record {}: step {} of {} is missing",
                                    stored.record.deploy_id(), index,
                                    stored.record.total_steps()));
}

std::string active_key(const std::string& id) { return "active." + id; }
std::string lock_key(const std::string& repo, const std::string& env) { return repo + "." + env; }

// Request ids are free text: their hash is the key.
std::string request_key(const std::string& request_id) {
  unsigned char hash[16];
  crypto_generichash(hash, sizeof hash, reinterpret_cast<const unsigned char*>(request_id.data()),
                     request_id.size(), nullptr, 0);
  char hex[sizeof hash * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
  return std::string{"request."} + hex;
}

std::vector<std::string> strip_prefix(std::vector<std::string> keys, std::string_view prefix) {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (auto& key : keys) {
    if (key.rfind(prefix, 0) == 0) out.push_back(key.substr(prefix.size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string new_deploy_id(std::chrono::system_clock::time_point now) {
  const auto seconds = std::chrono::time_point_cast<std::chrono::seconds>(now);
  return fmt::format("{:%Y%m%d-%H%M%S}-{:08x}", seconds, randombytes_random());
}

DeployBucketSpecs deploy_bucket_specs(Duration history, Duration lease_ttl, int replicas) {
  DeployBucketSpecs specs;
  specs.deploys = {kDeploysBucket, "orgd deploy records", history, 1, replicas};
  // A lock belongs to a deploy, not to the process running it: when the runner dies its lease
  // expires and the deploy is resumed with its locks held, so no other deploy slips in. A lock
  // expires with its deploy: one whose deploy has finished or is gone is taken over.
  specs.locks = {kLocksBucket, "orgd deploy locks: one deploy per repo+env", Duration{0}, 1,
                 replicas};
  specs.leases = {kLeasesBucket, "orgd leases: scheduler and deploy runners", lease_ttl, 1,
                  replicas};
  return specs;
}

DeployStore::DeployStore(std::unique_ptr<KvBucket> deploys, std::unique_ptr<KvBucket> locks,
                         std::unique_ptr<KvBucket> leases, const Clock& clock)
    : deploys_(std::move(deploys)),
      locks_(std::move(locks)),
      leases_(std::move(leases)),
      clock_(clock) {}

Result<std::unique_ptr<DeployStore>> DeployStore::open(const BucketOpener& open,
                                                       const DeployBucketSpecs& specs,
                                                       const Clock& clock) {
  auto deploys = open(specs.deploys);
  if (!deploys) return deploys.error();
  auto locks = open(specs.locks);
  if (!locks) return locks.error();
  auto leases = open(specs.leases);
  if (!leases) return leases.error();
  return std::make_unique<DeployStore>(std::move(deploys.value()), std::move(locks.value()),
                                       std::move(leases.value()), clock);
}

Result<std::optional<StoredRecord>> DeployStore::load_head(const std::string& deploy_id,
                                                           int steps) {
  auto entry = deploys_->get(record_key(deploy_id));
  if (!entry) return entry.error();
  if (!entry.value()) return std::optional<StoredRecord>{};
  StoredRecord stored;
  if (!stored.record.ParseFromString(entry.value()->value)) {
    return internal_error("deploy record " + deploy_id + " in KV cannot be parsed");
  }
  stored.revision = entry.value()->revision;
  v1::DeployRecord& record = stored.record;
  if (record.total_steps() == 0) {  // stored whole, and read whole (total_steps stays 0)
    stored.step_revisions.assign(static_cast<std::size_t>(record.steps_size()), 0);
    return std::optional<StoredRecord>{std::move(stored)};
  }
  record.clear_steps();
  const int wanted = std::min(steps, record.total_steps());
  for (int i = 0; i < wanted; ++i) {
    auto step = load_step(deploy_id, i);
    if (!step) return step.error();
    if (!step.value()) return missing_step(stored, i);
    if (!record.add_steps()->ParseFromString(step.value()->value)) {
      return internal_error(
          fmt::format("deploy record {}: step {} cannot be parsed", deploy_id, i));
    }
    stored.step_revisions.push_back(step.value()->revision);
  }
  return std::optional<StoredRecord>{std::move(stored)};
}

Result<std::optional<StoredRecord>> DeployStore::load(const std::string& deploy_id) {
  auto head = load_head(deploy_id, 0);
  if (!head || !head.value()) return head;
  StoredRecord& stored = *head.value();
  const int total = stored.record.total_steps();
  if (total == 0) return head;  // stored whole
  // One pass over the steps' keys, not a get per step: a deploy of 10,000 repos is read in one
  // listing.
  auto entries = deploys_->entries(record_key(deploy_id) + ".step.*");
  if (!entries) return entries.error();
  std::vector<const KvEntry*> by_index(static_cast<std::size_t>(total), nullptr);
  for (const auto& entry : entries.value()) {
    const int index = step_index(entry.key);
    if (index >= 0 && index < total) by_index[static_cast<std::size_t>(index)] = &entry;
  }
  stored.record.mutable_steps()->Reserve(total);
  stored.step_revisions.reserve(static_cast<std::size_t>(total));
  for (int i = 0; i < total; ++i) {
    const KvEntry* entry = by_index[static_cast<std::size_t>(i)];
    std::optional<KvEntry> got;
    if (entry == nullptr) {
      // Not in the listing: a step rewritten while the listing started (its old revision
      // removed, history 1, its new one after the listing's end) is not in it. Asked for alone.
      auto step = load_step(deploy_id, i);
      if (!step) return step.error();
      if (!step.value()) return missing_step(stored, i);
      got = std::move(step.value());
      entry = &*got;
    }
    if (!stored.record.add_steps()->ParseFromString(entry->value)) {
      return internal_error(
          fmt::format("deploy record {}: step {} cannot be parsed", deploy_id, i));
    }
    stored.step_revisions.push_back(entry->revision);
  }
  return head;
}

Result<std::optional<KvEntry>> DeployStore::load_step(const std::string& deploy_id, int index) {
  return deploys_->get(step_key(deploy_id, index));
}

Result<std::uint64_t> DeployStore::create(const v1::DeployRecord& record) {
  // Steps first: a header is never there without its steps. Keys of a new id: nobody else
  // writes them, so no compare-and-set is needed (the header's create refuses a taken id).
  for (int i = 0; i < record.steps_size(); ++i) {
    auto put = deploys_->put(step_key(record.deploy_id(), i), record.steps(i).SerializeAsString());
    if (!put) return put.error();
  }
  return deploys_->create(record_key(record.deploy_id()),
                          header_bytes(record, record.steps_size()));
}

Result<std::uint64_t> DeployStore::update(const v1::DeployRecord& record,
                                          std::uint64_t revision) {
  if (record.total_steps() == 0) {  // stored whole, and written so
    return deploys_->update(record_key(record.deploy_id()), record.SerializeAsString(), revision);
  }
  return update_header(record, record.total_steps(), revision);
}

Result<std::uint64_t> DeployStore::update_step(const std::string& deploy_id, int index,
                                               const v1::DeployStep& step,
                                               std::uint64_t revision) {
  const std::string key = step_key(deploy_id, index);
  if (revision == 0) return deploys_->create(key, step.SerializeAsString());
  return deploys_->update(key, step.SerializeAsString(), revision);
}

Result<std::uint64_t> DeployStore::update_header(const v1::DeployRecord& record, int total_steps,
                                                 std::uint64_t revision) {
  return deploys_->update(record_key(record.deploy_id()), header_bytes(record, total_steps),
                          revision);
}

Result<std::uint64_t> DeployStore::update(const v1::DeployRecord& record,
                                          const std::vector<int>& changed, StoredRecord& stored) {
  const int total = record.steps_size();
  stored.step_revisions.resize(static_cast<std::size_t>(total), 0);
  auto write = [&](int i) -> Result<Ok> {
    auto& revision = stored.step_revisions[static_cast<std::size_t>(i)];
    auto written = update_step(record.deploy_id(), i, record.steps(i), revision);
    if (!written) return written.error();
    revision = written.value();
    return Ok{};
  };
  std::vector<bool> done(static_cast<std::size_t>(total), false);
  for (const int i : changed) {
    if (i < 0 || i >= total || done[static_cast<std::size_t>(i)]) continue;
    if (auto written = write(i); !written) return written.error();
    done[static_cast<std::size_t>(i)] = true;
  }
  for (int i = 0; i < total; ++i) {  // a record stored whole: its steps get their keys now
    if (done[static_cast<std::size_t>(i)] || stored.step_revisions[static_cast<std::size_t>(i)] != 0) {
      continue;
    }
    if (auto written = write(i); !written) return written.error();
  }
  auto header = update_header(record, total, stored.revision);
  if (!header) return header.error();
  stored.revision = header.value();
  return header;
}

Result<std::optional<std::string>> DeployStore::deploy_of_request(const std::string& request_id) {
  auto entry = deploys_->get(request_key(request_id));
  if (!entry) return entry.error();
  if (!entry.value()) return std::optional<std::string>{};
  return std::optional<std::string>{entry.value()->value};
}

Result<std::optional<KvEntry>> DeployStore::request_claim(const std::string& request_id) {
  return deploys_->get(request_key(request_id));
}

Result<Ok> DeployStore::claim_request(const std::string& request_id,
                                      const std::string& deploy_id) {
  auto created = deploys_->create(request_key(request_id), deploy_id);
  if (!created) return created.error();
  return Ok{};
}

Result<Ok> DeployStore::release_request(const std::string& request_id) {
  return deploys_->remove(request_key(request_id));
}

Result<Ok> DeployStore::mark_active(const std::string& deploy_id) {
  auto put = deploys_->put(active_key(deploy_id), deploy_id);
  if (!put) return put.error();
  return Ok{};
}

Result<Ok> DeployStore::clear_active(const std::string& deploy_id) {
  return deploys_->remove(active_key(deploy_id));
}

Result<std::vector<std::string>> DeployStore::active_ids() {
  auto keys = deploys_->keys("active.*");
  if (!keys) return keys.error();
  return strip_prefix(std::move(keys.value()), "active.");
}

Result<std::vector<std::string>> DeployStore::deploy_ids() {
  auto keys = deploys_->keys("deploy.*");
  if (!keys) return keys.error();
  return strip_prefix(std::move(keys.value()), "deploy.");
}

Result<Ok> DeployStore::acquire_locks(const std::vector<std::string>& repos,
                                      const std::string& env, const std::string& deploy_id) {
  std::vector<std::string> taken;
  auto undo = [&] {
    release_locks(taken, env, deploy_id);
  };
  for (const auto& repo : repos) {
    const std::string key = lock_key(repo, env);
    auto created = locks_->create(key, deploy_id);
    if (created) {
      taken.push_back(repo);
      continue;
    }
    if (created.error().code != ErrorCode::conflict) {
      undo();
      return created.error();
    }
    auto holder = locks_->get(key);
    if (!holder) {
      undo();
      return holder.error();
    }
    if (!holder.value()) {  // released meanwhile: try once more
      if (auto again = locks_->create(key, deploy_id); again) {
        taken.push_back(repo);
        continue;
      }
      undo();
      return conflict(fmt::format("{}/{} is being locked by another deploy", repo, env));
    }
    const std::string holder_id = holder.value()->value;
    if (holder_id == deploy_id) {
      taken.push_back(repo);
      continue;
    }
    // A lock left behind by a deploy that has finished is stale: take it over, compare-and-set.
    // So is one whose deploy has no record well after the lock was taken (an orgd died while
    // accepting it); a young one may belong to a deploy being accepted right now.
    auto holder_record = load(holder_id);
    const bool orphan = holder_record && !holder_record.value() &&
                        clock_.now() - holder.value()->created > kOrphanLockAge;
    const bool stale =
        orphan || (holder_record && holder_record.value() &&
                   is_terminal(holder_record.value()->record.state()));
    if (stale) {
      if (auto over = locks_->update(key, deploy_id, holder.value()->revision); over) {
        taken.push_back(repo);
        continue;
      }
    }
    undo();
    return conflict(fmt::format("{}/{} is locked by deploy {}", repo, env, holder_id));
  }
  return Ok{};
}

Result<std::vector<std::string>> DeployStore::check_locks(const std::vector<std::string>& repos,
                                                          const std::string& env,
                                                          const std::string& deploy_id) {
  std::vector<std::string> lost;
  for (const auto& repo : repos) {
    const std::string key = lock_key(repo, env);
    auto holder = locks_->get(key);
    if (!holder) return holder.error();
    if (!holder.value()) {
      if (auto created = locks_->create(key, deploy_id); !created) {
        if (created.error().code != ErrorCode::conflict) return created.error();
        lost.push_back(repo);
      }
      continue;
    }
    if (holder.value()->value != deploy_id) lost.push_back(repo);
  }
  return lost;
}

void DeployStore::release_locks(const std::vector<std::string>& repos, const std::string& env,
                                const std::string& deploy_id) {
  for (const auto& repo : repos) {
    const std::string key = lock_key(repo, env);
    auto holder = locks_->get(key);
    if (holder && holder.value() && holder.value()->value == deploy_id) {
      (void)locks_->remove(key);
    }
  }
}

void DeployStore::drop_locks(const std::vector<std::string>& repos, const std::string& env) {
  for (const auto& repo : repos) (void)locks_->remove(lock_key(repo, env));
}

Result<std::optional<std::string>> DeployStore::lock_holder(const std::string& repo,
                                                            const std::string& env) {
  auto holder = locks_->get(lock_key(repo, env));
  if (!holder) return holder.error();
  if (!holder.value()) return std::optional<std::string>{};
  return std::optional<std::string>{holder.value()->value};
}

Result<std::uint64_t> DeployStore::acquire_lease(const std::string& key,
                                                 const std::string& holder) {
  auto created = leases_->create(key, holder);
  if (created || created.error().code != ErrorCode::conflict) return created;
  // Ours already (a restart within the ttl, or a renewal that raced): take it on.
  auto current = leases_->get(key);
  if (!current) return current.error();
  if (current.value() && current.value()->value == holder) {
    return leases_->update(key, holder, current.value()->revision);
  }
  return created.error();
}

Result<std::uint64_t> DeployStore::renew_lease(const std::string& key, const std::string& holder,
                                               std::uint64_t revision) {
  return leases_->update(key, holder, revision);
}

void DeployStore::release_lease(const std::string& key, const std::string& holder) {
  auto current = leases_->get(key);
  if (current && current.value() && current.value()->value == holder) (void)leases_->remove(key);
}

Result<std::optional<std::string>> DeployStore::lease_holder(const std::string& key) {
  auto current = leases_->get(key);
  if (!current) return current.error();
  if (!current.value()) return std::optional<std::string>{};
  return std::optional<std::string>{current.value()->value};
}

}  // namespace orgd::deploy
