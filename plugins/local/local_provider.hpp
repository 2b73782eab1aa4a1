#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"

namespace orgd {

// Deploys that only write release records under <data_dir>/local/<repo>/<env>/: for the embedded
// default config, demos and tests. A deploy "runs" for `duration` and then succeeds, or fails
// when `fail: true`. With `steps: [10, 100]` it is a gradual rollout: each step but the last
// runs for `duration` and is then reported as a gated phase ("10% of traffic"); orgd's health
// gate runs, and advance() starts the next step (rewriting the record with its phase).
//
// Files per repo and env:
//   <deploy_id>.json          the release record start() writes (replaced, never edited); poll()
//                             and recover() read it, so a restarted orgd still knows the deploy.
//   <deploy_id>.rolled_back   written by rollback().
//   executions.log            one JSON object per start(), {"deploy_id", "attempt", "started_at"},
//                             appended after the record is in place with a single O_APPEND
//                             write, so concurrent starts never interleave. Tests in other
//                             processes count it to prove that no step ran twice across a
//                             restart; executions() only counts this process's starts.
class LocalDeployTarget final : public DeployTarget {
 public:
  struct Settings {
    Duration duration = std::chrono::seconds{1};
    bool fail = false;
    std::vector<int> steps{100};  // percentages, rising, the last 100
  };

  LocalDeployTarget(Settings settings, std::string data_dir, std::shared_ptr<const Clock> clock);

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  Result<DeployProgress> advance(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return true; }
  // The release record of this attempt decides: present → as poll(), absent → not_found. A record
  // left by another attempt of the same deploy does not count: this attempt never started.
  Result<DeployProgress> recover(const DeployContext& context) override;

  // How many deploys start() has begun in this process.
  int executions() const { return executions_.load(); }

 private:
  // Writes the release record of `context`'s deploy at `phase` (0-based step index).
  Result<std::string> write_record(const DeployContext& context, int phase);

  Settings settings_;
  std::string data_dir_;
  std::shared_ptr<const Clock> clock_;
  std::atomic<int> executions_{0};
};

class LocalProvider final : public Provider {
 public:
  LocalProvider(std::string name, std::string data_dir, std::shared_ptr<const Clock> clock);

  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
  Capabilities capabilities() const override { return {.deploy_target = true}; }

 private:
  std::string data_dir_;
  std::shared_ptr<const Clock> clock_;
};

// Validates the provider-level settings (there are none) and builds the provider.
std::unique_ptr<Provider> make_local_provider(const ProviderConfig& config,
                                              const ProviderServices& services,
                                              const std::string& source_file);

}  // namespace orgd
