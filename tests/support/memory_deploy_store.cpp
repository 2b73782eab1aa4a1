#include "tests/support/memory_deploy_store.hpp"

#include <stdexcept>

namespace orgd::testing {

std::unique_ptr<deploy::DeployStore> memory_deploy_store(MemoryKvStore& kv, Duration lease_ttl,
                                                         Duration history) {
  auto store = deploy::DeployStore::open(
      memory_bucket_opener(kv), deploy::deploy_bucket_specs(history, lease_ttl, 1), kv.clock());
  if (!store) throw std::runtime_error(store.error().message);
  return std::move(store.value());
}

deploy::BucketOpener memory_bucket_opener(MemoryKvStore& kv) {
  return [&kv](const BucketSpec& spec) { return kv.open(spec); };
}

}  // namespace orgd::testing
