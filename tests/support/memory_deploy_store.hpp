#pragma once

#include <chrono>
#include <memory>

#include "daemon/bus/memory_kv_bucket.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/deploy/deploy_store.hpp"

namespace orgd::testing {

// A DeployStore on the three deploy buckets of `kv` (orgd_deploys, orgd_locks, orgd_leases with
// `lease_ttl`), in memory and on the store's clock: locks, leases and records without a
// nats-server. Through `kv` a test loses NATS (set_unavailable) or the store (lose_data).
std::unique_ptr<deploy::DeployStore> memory_deploy_store(
    MemoryKvStore& kv, Duration lease_ttl = std::chrono::seconds{15},
    Duration history = Duration{0});

// Opens the buckets of `kv` as KvBucket::open does on a JetStream context (Orchestrator::attach).
deploy::BucketOpener memory_bucket_opener(MemoryKvStore& kv);

}  // namespace orgd::testing
