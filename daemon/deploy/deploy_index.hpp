#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/errors.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::deploy {

// Keys of orgd_deploys beside the records (deploy_store.hpp), each one bounded list updated by
// compare-and-set, so every replica can change it and none loses another's change:
//   index.recent  DeployIndex   the newest deploys (deploy.list, last deploys in status)
//   queue         DeployQueue   commands waiting behind a lock, oldest first
inline constexpr const char* kRecentIndexKey = "index.recent";
inline constexpr const char* kQueueKey = "queue";

// Deploys the recent index keeps; older ones are still in KV (deploy.get) but not listed.
inline constexpr std::size_t kRecentIndexSize = 1000;
// Deploys the queue holds, and the bytes of its key (far below NATS' 1 MiB max payload; a
// deploy of many repos takes more of it).
inline constexpr std::size_t kMaxQueuedDeploys = 500;
inline constexpr std::size_t kMaxQueueBytes = 512 * 1024;

class RecentDeploys {
 public:
  explicit RecentDeploys(KvBucket& bucket) : bucket_(bucket) {}

  // Appends a deploy (dropping the oldest past kRecentIndexSize).
  Result<Ok> add(const v1::DeployIndex::Entry& entry);
  // The index entry of a deploy of `repos` to `env`.
  static v1::DeployIndex::Entry entry_of(const std::string& deploy_id, const std::string& env,
                                         const std::vector<std::string>& repos);
  // Oldest first; empty when nothing was indexed yet.
  Result<v1::DeployIndex> read();
  // Writes the index when it does not exist yet (an orgd before the index), from ids found
  // otherwise; false when it existed.
  Result<bool> seed(const v1::DeployIndex& index);

 private:
  KvBucket& bucket_;
};

class DeployQueueStore {
 public:
  explicit DeployQueueStore(KvBucket& bucket) : bucket_(bucket) {}

  struct Read {
    v1::DeployQueue queue;
    std::uint64_t revision = 0;  // 0: the key does not exist
  };
  Result<Read> read();
  // Appends a deploy; conflict with a plain reason when the queue is full.
  Result<Ok> push(const v1::DeployQueue::Entry& entry);
  // Removes a deploy (no-op when it is not queued).
  Result<Ok> remove(const std::string& deploy_id);

 private:
  KvBucket& bucket_;
};

// True when one of `repos` in `env` has a deploy waiting in `queue`.
bool queued_for(const v1::DeployQueue& queue, const std::vector<std::string>& repos,
                const std::string& env);

}  // namespace orgd::deploy
