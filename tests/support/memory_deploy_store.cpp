#include "tests/support/memory_deploy_store.hpp"

#include <stdexcept>

namespace orgd::testing {

std::unique_ptr<deploy::DeployStore> memory_deploy_store(MemoryKvStore& kv, Duration lease_ttl,
                                                         Duration history) {
  auto open = [&](const char* name, Duration ttl) {
    auto bucket = kv.open({name, "test", ttl, 1, 1});
    if (!bucket) throw std::runtime_error(bucket.error().message);
    return std::move(bucket.value());
  };
  return std::make_unique<deploy::DeployStore>(open(deploy::kDeploysBucket, history),
                                               open(deploy::kLocksBucket, Duration{0}),
                                               open(deploy::kLeasesBucket, lease_ttl), kv.clock());
}

}  // namespace orgd::testing
