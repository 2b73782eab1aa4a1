#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"

struct __jsCtx;
struct __kvStore;

namespace orgd {

struct BucketSpec {
  std::string name;
  std::string description;
  // Entries older than this disappear (0: never). Per bucket: nats-server 2.9 has no per-key TTL.
  Duration ttl{0};
  int history = 1;
  int replicas = 1;
};

struct KvEntry {
  std::string key;
  std::string value;
  std::uint64_t revision = 0;
  std::chrono::system_clock::time_point created;  // when this revision was written
};

// A KV bucket: JetStream KV in orgd (JetStreamKvBucket), in memory in tests (MemoryKvBucket).
// Revisions increase per bucket across all its keys, as JetStream's stream sequence does. Every
// call is bounded; trouble reaching the store comes back as `unavailable`, a failed
// compare-and-set as `conflict`. Thread-safe.
class KvBucket {
 public:
  // Creates the JetStream bucket, or updates its ttl, history and replicas when it exists.
  static Result<std::unique_ptr<KvBucket>> open(__jsCtx* js, const BucketSpec& spec);
  virtual ~KvBucket() = default;
  KvBucket(const KvBucket&) = delete;
  KvBucket& operator=(const KvBucket&) = delete;

  virtual const std::string& name() const = 0;

  // The current value; nullopt when the key is absent or deleted.
  virtual Result<std::optional<KvEntry>> get(const std::string& key) = 0;
  // Writes only when the key is absent (or deleted): conflict otherwise.
  virtual Result<std::uint64_t> create(const std::string& key, const std::string& value) = 0;
  // Writes only when the key's revision is still `last_revision`: conflict otherwise.
  virtual Result<std::uint64_t> update(const std::string& key, const std::string& value,
                                       std::uint64_t last_revision) = 0;
  virtual Result<std::uint64_t> put(const std::string& key, const std::string& value) = 0;
  virtual Result<Ok> remove(const std::string& key) = 0;
  // Keys present (not deleted) matching a subject filter such as "deploy.*" or ">".
  virtual Result<std::vector<std::string>> keys(const std::string& filter) = 0;
  // The keys present matching a filter with their values, in one pass over what is stored now,
  // in no particular order. A key written while the listing starts may show either value, or
  // (JetStream, history 1: its old value removed, its new one after the listing's end) be
  // missing: a caller that needs every key asks for a missing one with get().
  virtual Result<std::vector<KvEntry>> entries(const std::string& filter) = 0;

 protected:
  KvBucket() = default;
};

// One JetStream KV bucket (nats.c kvStore). Every call is bounded by the JetStream context's
// timeout; NATS trouble comes back as `unavailable`, a failed compare-and-set as `conflict`.
class JetStreamKvBucket final : public KvBucket {
 public:
  ~JetStreamKvBucket() override;

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
  friend class KvBucket;  // open() makes them
  JetStreamKvBucket(__kvStore* kv, std::string name) : kv_(kv), name_(std::move(name)) {}
  Error failure(const std::string& what, const std::string& key, int status) const;
  // The current entries matching `filter` (values too unless `meta_only`).
  Result<std::vector<KvEntry>> current(const std::string& filter, bool meta_only);

  __kvStore* kv_;
  std::string name_;
};

}  // namespace orgd
