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

// One JetStream KV bucket (nats.c kvStore). Every call is bounded by the JetStream context's
// timeout; NATS trouble comes back as `unavailable`, a failed compare-and-set as `conflict`.
// Thread-safe.
class KvBucket {
 public:
  // Creates the bucket, or updates its ttl, history and replicas when it exists.
  static Result<std::unique_ptr<KvBucket>> open(__jsCtx* js, const BucketSpec& spec);
  ~KvBucket();
  KvBucket(const KvBucket&) = delete;
  KvBucket& operator=(const KvBucket&) = delete;

  const std::string& name() const { return name_; }

  // The current value; nullopt when the key is absent or deleted.
  Result<std::optional<KvEntry>> get(const std::string& key);
  // Writes only when the key is absent (or deleted): conflict otherwise.
  Result<std::uint64_t> create(const std::string& key, const std::string& value);
  // Writes only when the key's revision is still `last_revision`: conflict otherwise.
  Result<std::uint64_t> update(const std::string& key, const std::string& value,
                               std::uint64_t last_revision);
  Result<std::uint64_t> put(const std::string& key, const std::string& value);
  Result<Ok> remove(const std::string& key);
  // Keys present (not deleted) matching a subject filter such as "deploy.*" or ">".
  Result<std::vector<std::string>> keys(const std::string& filter);

 private:
  KvBucket(__kvStore* kv, std::string name) : kv_(kv), name_(std::move(name)) {}
  Error failure(const std::string& what, const std::string& key, int status) const;

  __kvStore* kv_;
  std::string name_;
};

}  // namespace orgd
