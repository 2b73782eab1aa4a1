#include "daemon/deploy/deploy_index.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>

namespace orgd::deploy {

namespace {

// Compare-and-set rounds before giving up: each lost round means another replica wrote the
// key in between, which takes far fewer rounds than this even with many replicas.
constexpr int kMaxRounds = 50;

template <class Message>
struct Loaded {
  Message message;
  std::uint64_t revision = 0;  // 0: absent
};

template <class Message>
Result<Loaded<Message>> load(KvBucket& bucket, const std::string& key) {
  auto entry = bucket.get(key);
  if (!entry) return entry.error();
  Loaded<Message> loaded;
  if (!entry.value()) return loaded;
  if (!loaded.message.ParseFromString(entry.value()->value)) {
    return internal_error("KV key " + key + " of " + bucket.name() + " cannot be parsed");
  }
  loaded.revision = entry.value()->revision;
  return loaded;
}

// Reads the key, lets `change` edit it (false: nothing to write), writes it back revision-checked,
// and starts over when another replica wrote in between.
template <class Message>
Result<Ok> update(KvBucket& bucket, const std::string& key,
                  const std::function<Result<bool>(Message&)>& change) {
  for (int round = 0; round < kMaxRounds; ++round) {
    auto loaded = load<Message>(bucket, key);
    if (!loaded) return loaded.error();
    auto changed = change(loaded.value().message);
    if (!changed) return changed.error();
    if (!changed.value()) return Ok{};
    const std::string bytes = loaded.value().message.SerializeAsString();
    auto written = loaded.value().revision == 0
                       ? bucket.create(key, bytes)
                       : bucket.update(key, bytes, loaded.value().revision);
    if (written) return Ok{};
    if (written.error().code != ErrorCode::conflict) return written.error();
  }
  return unavailable("KV key " + key + " changes too fast; try again");
}

}  // namespace

// Repos an index entry names; a deploy of more is marked many_repos (filters read its record).
constexpr std::size_t kIndexedRepos = 16;

v1::DeployIndex::Entry RecentDeploys::entry_of(const std::string& deploy_id, const std::string& env,
                                               const std::vector<std::string>& repos) {
  v1::DeployIndex::Entry entry;
  entry.set_deploy_id(deploy_id);
  entry.set_env(env);
  if (repos.size() > kIndexedRepos) {
    entry.set_many_repos(true);
  } else {
    for (const auto& repo : repos) entry.add_repos(repo);
  }
  return entry;
}

Result<Ok> RecentDeploys::add(const v1::DeployIndex::Entry& entry) {
  return update<v1::DeployIndex>(
      bucket_, kRecentIndexKey, [&](v1::DeployIndex& index) -> Result<bool> {
        for (const auto& known : index.entries()) {
          if (known.deploy_id() == entry.deploy_id()) return false;
        }
        *index.add_entries() = entry;
        const int excess = index.entries_size() - static_cast<int>(kRecentIndexSize);
        if (excess > 0) index.mutable_entries()->DeleteSubrange(0, excess);
        return true;
      });
}

Result<v1::DeployIndex> RecentDeploys::read() {
  auto loaded = load<v1::DeployIndex>(bucket_, kRecentIndexKey);
  if (!loaded) return loaded.error();
  return std::move(loaded.value().message);
}

Result<bool> RecentDeploys::seed(const v1::DeployIndex& index) {
  auto created = bucket_.create(kRecentIndexKey, index.SerializeAsString());
  if (created) return true;
  if (created.error().code == ErrorCode::conflict) return false;
  return created.error();
}

Result<DeployQueueStore::Read> DeployQueueStore::read() {
  auto loaded = load<v1::DeployQueue>(bucket_, kQueueKey);
  if (!loaded) return loaded.error();
  return Read{std::move(loaded.value().message), loaded.value().revision};
}

Result<Ok> DeployQueueStore::push(const v1::DeployQueue::Entry& entry) {
  return update<v1::DeployQueue>(bucket_, kQueueKey, [&](v1::DeployQueue& queue) -> Result<bool> {
    for (const auto& queued : queue.entries()) {
      if (queued.deploy_id() == entry.deploy_id()) return false;
    }
    if (static_cast<std::size_t>(queue.entries_size()) >= kMaxQueuedDeploys ||
        queue.ByteSizeLong() + entry.ByteSizeLong() > kMaxQueueBytes) {
      return conflict(fmt::format(
          "the deploy queue is full ({} deploys wait for a lock; at most {} deploys or {} KiB "
          "of repo names): not queued",
          queue.entries_size(), kMaxQueuedDeploys, kMaxQueueBytes / 1024));
    }
    *queue.add_entries() = entry;
    return true;
  });
}

Result<Ok> DeployQueueStore::remove(const std::string& deploy_id) {
  return update<v1::DeployQueue>(bucket_, kQueueKey, [&](v1::DeployQueue& queue) -> Result<bool> {
    auto* entries = queue.mutable_entries();
    const auto it = std::find_if(entries->begin(), entries->end(),
                                 [&](const auto& e) { return e.deploy_id() == deploy_id; });
    if (it == entries->end()) return false;
    entries->erase(it);
    return true;
  });
}

bool queued_for(const v1::DeployQueue& queue, const std::vector<std::string>& repos,
                const std::string& env) {
  for (const auto& entry : queue.entries()) {
    if (entry.env() != env) continue;
    for (const auto& repo : entry.repos()) {
      if (std::find(repos.begin(), repos.end(), repo) != repos.end()) return true;
    }
  }
  return false;
}

}  // namespace orgd::deploy
