#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/core/duration.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"

namespace orgd {

// Runs a command (e.g. `task deploy`) with `/bin/sh -c` in a working directory. The command sees
// ORGD_REPO, ORGD_ENV, ORGD_REF and ORGD_DEPLOY_ID; its output goes line by line to the log sink
// (bounded), and it runs to completion inside start(), so start() never returns `running`.
class ExecDeployTarget final : public DeployTarget {
 public:
  struct Settings {
    std::string command;
    std::string workdir = ".";
    Duration timeout = std::chrono::minutes{10};
    std::optional<std::string> rollback_command;
  };

  static constexpr std::size_t kMaxLines = 1000;
  static constexpr std::size_t kMaxLineBytes = 1000;
  static constexpr std::size_t kMaxResults = 100;  // results kept for poll()

  explicit ExecDeployTarget(Settings settings) : settings_(std::move(settings)) {}

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context, const std::string& handle) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return settings_.rollback_command.has_value(); }

 private:
  Settings settings_;
  std::mutex results_mutex_;  // guards results_ and results_order_
  std::map<std::string, DeployProgress> results_;
  std::deque<std::string> results_order_;
};

class ExecProvider final : public Provider {
 public:
  explicit ExecProvider(std::string name) : Provider(std::move(name), "exec") {}

  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
};

std::unique_ptr<Provider> make_exec_provider(const ProviderConfig& config,
                                             const ProviderEnvironment& env,
                                             const std::string& source_file);

}  // namespace orgd
