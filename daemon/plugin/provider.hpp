#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"

// The provider SPI (DESIGN.md §8). Providers take validated settings and never read raw config
// after construction; the orchestrator calls targets synchronously from its provider threads,
// each call under a deadline (a call past it fails the attempt and keeps its thread).
namespace orgd {

struct DeployContext {
  std::string repo, env, ref, deploy_id;
  int attempt = 1;
};

// `interrupted` (from recover() only): the attempt ended because orgd stopped or died while it
// ran (an exec command killed with orgd), not because the deploy failed; the orchestrator runs
// the step again as a new attempt that does not count against its retries.
enum class DeployStatus { running, succeeded, failed, interrupted };

struct DeployProgress {
  DeployStatus status = DeployStatus::running;
  std::string handle;  // the provider's id of the started deploy, for poll/rollback/resume
  std::string error;   // set when failed or interrupted
};

using LogSink = std::function<void(std::string_view line)>;

// One per repo+env target, built from validated settings.
class DeployTarget {
 public:
  virtual ~DeployTarget() = default;
  virtual Result<DeployProgress> start(const DeployContext& context, const LogSink& log) = 0;
  virtual Result<DeployProgress> poll(const DeployContext& context, const std::string& handle) = 0;
  virtual Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) = 0;
  virtual bool can_rollback() const = 0;
  // The longest a start() or rollback() can take when the provider bounds its own calls (exec
  // kills its command after `timeout`). The orchestrator then never abandons such a call sooner,
  // even with a shorter step_timeout: the work it does is still running, and a new attempt
  // beside it would run it twice at once.
  virtual std::optional<Duration> max_call_duration() const { return std::nullopt; }
  // Re-checks a step that was in flight when its orgd died, before its start was recorded with a
  // handle: what became of the deploy `context` names (deploy id, repo, env, attempt)? not_found
  // means the provider knows nothing of it and the orchestrator may start it again; interrupted
  // that it was started and ended with orgd, so it runs again as a new attempt.
  virtual Result<DeployProgress> recover(const DeployContext& context) {
    (void)context;
    return not_found("provider keeps no record of started deploys");
  }
};

class Provider {
 public:
  virtual ~Provider() = default;
  // The instance's name (providers.<name>) and its type (local, exec, ...).
  const std::string& name() const { return name_; }
  const std::string& type() const { return type_; }
  // Validates the per-target settings; throws ConfigError naming file, line and key.
  virtual std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                           const std::string& source_file) = 0;

 protected:
  Provider(std::string name, std::string type) : name_(std::move(name)), type_(std::move(type)) {}

 private:
  std::string name_;
  std::string type_;
};

}  // namespace orgd
