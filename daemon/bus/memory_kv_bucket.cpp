#include "daemon/bus/memory_kv_bucket.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>
#include <vector>

namespace orgd {

namespace {

std::vector<std::string_view> tokens(std::string_view subject) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto dot = subject.find('.');
    out.push_back(subject.substr(0, dot));
    if (dot == std::string_view::npos) return out;
    subject.remove_prefix(dot + 1);
  }
}

}  // namespace

bool subject_matches(const std::string& filter, const std::string& key) {
  const auto want = tokens(filter);
  const auto have = tokens(key);
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i] == ">") return i + 1 == want.size() && have.size() > i;
    if (i >= have.size()) return false;
    if (want[i] != "*" && want[i] != have[i]) return false;
  }
  return want.size() == have.size();
}

MemoryKvStore::MemoryKvStore(const Clock& clock) : state_(std::make_shared<State>(clock)) {}

Result<std::unique_ptr<KvBucket>> MemoryKvStore::open(const BucketSpec& spec) {
  std::lock_guard lock(state_->mutex);
  if (state_->unavailable) return unavailable("creating KV bucket " + spec.name + ": no store");
  state_->buckets[spec.name].ttl = spec.ttl;
  return std::unique_ptr<KvBucket>(new MemoryKvBucket(state_, spec.name));
}

void MemoryKvStore::set_unavailable(bool unavailable) {
  std::lock_guard lock(state_->mutex);
  state_->unavailable = unavailable;
}

void MemoryKvStore::lose_data() {
  std::lock_guard lock(state_->mutex);
  state_->buckets.clear();
}

MemoryKvStore::Written MemoryKvStore::written(const std::string& bucket) const {
  std::lock_guard lock(state_->mutex);
  const auto found = state_->buckets.find(bucket);
  return found == state_->buckets.end() ? Written{} : found->second.written;
}

Result<MemoryKvStore::Bucket*> MemoryKvBucket::reach(const std::string& what,
                                                     const std::string& key) {
  if (state_->unavailable) {
    return unavailable(fmt::format("KV {} {}/{}: no connection", what, name_, key));
  }
  auto found = state_->buckets.find(name_);
  if (found == state_->buckets.end()) {
    return unavailable(fmt::format("KV {} {}/{}: no such bucket", what, name_, key));
  }
  MemoryKvStore::Bucket& bucket = found->second;
  if (bucket.ttl.count() > 0) {
    const auto now = state_->clock.now();
    std::erase_if(bucket.entries,
                  [&](const auto& entry) { return now - entry.second.created >= bucket.ttl; });
  }
  return &bucket;
}

std::uint64_t MemoryKvBucket::write(MemoryKvStore::Bucket& bucket, const std::string& key,
                                    std::string value, bool deleted) {
  if (!deleted) {
    ++bucket.written.writes;
    bucket.written.bytes += value.size();
    bucket.written.largest = std::max(bucket.written.largest, value.size());
  }
  auto& entry = bucket.entries[key];
  entry.value = std::move(value);
  entry.revision = ++bucket.last_revision;
  entry.created = state_->clock.now();
  entry.deleted = deleted;
  return entry.revision;
}

Result<std::optional<KvEntry>> MemoryKvBucket::get(const std::string& key) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("get", key);
  if (!bucket) return bucket.error();
  const auto found = bucket.value()->entries.find(key);
  if (found == bucket.value()->entries.end() || found->second.deleted) {
    return std::optional<KvEntry>{};
  }
  return std::optional<KvEntry>{
      KvEntry{key, found->second.value, found->second.revision, found->second.created}};
}

Result<std::uint64_t> MemoryKvBucket::create(const std::string& key, const std::string& value) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("create", key);
  if (!bucket) return bucket.error();
  const auto found = bucket.value()->entries.find(key);
  if (found != bucket.value()->entries.end() && !found->second.deleted) {
    return conflict(fmt::format("KV create {}/{}: key exists", name_, key));
  }
  return write(*bucket.value(), key, value, false);
}

Result<std::uint64_t> MemoryKvBucket::update(const std::string& key, const std::string& value,
                                             std::uint64_t last_revision) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("update", key);
  if (!bucket) return bucket.error();
  const auto found = bucket.value()->entries.find(key);
  const std::uint64_t current = found == bucket.value()->entries.end() ? 0 : found->second.revision;
  if (current != last_revision) {
    return conflict(fmt::format("KV update {}/{}: wrong last sequence: {}", name_, key, current));
  }
  return write(*bucket.value(), key, value, false);
}

Result<std::uint64_t> MemoryKvBucket::put(const std::string& key, const std::string& value) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("put", key);
  if (!bucket) return bucket.error();
  return write(*bucket.value(), key, value, false);
}

Result<Ok> MemoryKvBucket::remove(const std::string& key) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("delete", key);
  if (!bucket) return bucket.error();
  write(*bucket.value(), key, {}, true);
  return Ok{};
}

Result<std::vector<std::string>> MemoryKvBucket::keys(const std::string& filter) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("list", filter);
  if (!bucket) return bucket.error();
  std::vector<std::string> out;
  for (const auto& [key, entry] : bucket.value()->entries) {
    if (!entry.deleted && subject_matches(filter, key)) out.push_back(key);
  }
  return out;
}

Result<std::vector<KvEntry>> MemoryKvBucket::entries(const std::string& filter) {
  std::lock_guard lock(state_->mutex);
  auto bucket = reach("list", filter);
  if (!bucket) return bucket.error();
  std::vector<KvEntry> out;
  for (const auto& [key, entry] : bucket.value()->entries) {
    if (!entry.deleted && subject_matches(filter, key)) {
      out.push_back(KvEntry{key, entry.value, entry.revision, entry.created});
    }
  }
  return out;
}

}  // namespace orgd
