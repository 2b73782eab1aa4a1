#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/bus/kv_bucket.hpp"
#include "daemon/core/clock.hpp"

namespace orgd {

// KV buckets in memory, behaving as JetStream KV does for what orgd relies on, so logic over a
// KvBucket is testable without a nats-server or the wall clock:
//   - revisions increase per bucket across all its keys (a stream sequence), a delete marker
//     taking one too;
//   - create succeeds on an absent or deleted key, update only at the key's current revision (a
//     deleted key's is its marker's, an absent key's 0);
//   - keys() takes subject filters ("deploy.*", "a.>", ">");
//   - a bucket ttl makes every entry, delete markers too, disappear `ttl` after it was written,
//     by the injected clock (a ManualClock moves a lease past its expiry);
//   - set_unavailable(true) makes every call fail as `unavailable`, as a lost NATS does;
//   - lose_data() is a nats-server back with an empty store: buckets are gone (calls fail as
//     `unavailable`) until opened again, and handles opened before reach the new bucket.
// Buckets live in the MemoryKvStore; a MemoryKvBucket is a handle to one by name, and may
// outlive the store. Thread-safe.
class MemoryKvStore {
 public:
  // `clock` must outlive the store and every bucket handle.
  explicit MemoryKvStore(const Clock& clock);

  // Creates the bucket, or updates its ttl when it exists (its entries are kept), as
  // KvBucket::open does.
  Result<std::unique_ptr<KvBucket>> open(const BucketSpec& spec);

  void set_unavailable(bool unavailable);
  void lose_data();

  // What was written to a bucket since it was first opened (creates, updates and puts that
  // landed; deletes not counted): how many writes, their bytes, the largest value.
  struct Written {
    std::uint64_t writes = 0;
    std::uint64_t bytes = 0;
    std::size_t largest = 0;
  };
  Written written(const std::string& bucket) const;
  const Clock& clock() const { return state_->clock; }

 private:
  friend class MemoryKvBucket;
  struct Entry {
    std::string value;
    std::uint64_t revision = 0;
    Clock::time_point created;
    bool deleted = false;  // a delete marker
  };
  struct Bucket {
    Duration ttl{0};
    std::uint64_t last_revision = 0;
    std::map<std::string, Entry> entries;
    Written written;
  };
  struct State {
    explicit State(const Clock& c) : clock(c) {}
    const Clock& clock;
    std::mutex mutex;  // guards everything below
    bool unavailable = false;
    std::map<std::string, Bucket> buckets;
  };

  std::shared_ptr<State> state_;
};

// A handle to one bucket of a MemoryKvStore (made by MemoryKvStore::open).
class MemoryKvBucket final : public KvBucket {
 public:
  const std::string& name() const override { return name_; }

  Result<std::optional<KvEntry>> get(const std::string& key) override;
  Result<std::uint64_t> create(const std::string& key, const std::string& value) override;
  Result<std::uint64_t> update(const std::string& key, const std::string& value,
                               std::uint64_t last_revision) override;
  Result<std::uint64_t> put(const std::string& key, const std::string& value) override;
  Result<Ok> remove(const std::string& key) override;
  Result<std::vector<std::string>> keys(const std::string& filter) override;
  Result<std::vector<KvEntry>> entries(const std::string& filter) override;

 private:
  friend class MemoryKvStore;  // open() makes them
  MemoryKvBucket(std::shared_ptr<MemoryKvStore::State> state, std::string name)
      : state_(std::move(state)), name_(std::move(name)) {}

  // The bucket with its expired entries gone, or why it cannot be reached. Called with the
  // state's mutex held.
  Result<MemoryKvStore::Bucket*> reach(const std::string& what, const std::string& key);
  std::uint64_t write(MemoryKvStore::Bucket& bucket, const std::string& key, std::string value,
                      bool deleted);

  std::shared_ptr<MemoryKvStore::State> state_;
  std::string name_;
};

// True when the subject `key` matches `filter`: tokens split at '.', '*' matching one token and
// a final '>' one or more.
bool subject_matches(const std::string& filter, const std::string& key);

}  // namespace orgd
