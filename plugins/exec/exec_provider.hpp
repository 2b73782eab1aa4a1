#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "daemon/core/clock.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "daemon/plugin/registry.hpp"

namespace orgd {

// Runs a command (e.g. `task deploy`) with `/bin/sh -c` in a working directory. The command sees
// ORGD_REPO, ORGD_ENV, ORGD_REF and ORGD_DEPLOY_ID, of orgd's environment only PATH, HOME,
// LANG, TZ and the names the target lists under `env:` (never orgd's credentials), and, when orgd
// has a vault, the repo's secrets (repos.<repo>.secrets, resolved for each run: RepoSecrets). A
// secret named like one of the other variables fails the run (nothing is started), as does a
// vault that cannot resolve one (the error names the secret, never a value). Its output goes to
// the log sink line by line while it runs (at most kMaxLines lines of kMaxLineBytes, then one
// final "output truncated" line), each line scrubbed of the secret values first (OutputScrubber:
// values of 4 bytes or more become ***), and it runs to completion inside start(), so start()
// never returns `running`. A failure's error ends with the last non-blank output line, scrubbed
// too ("exit code 127: sh: 1: deploy.sh: not found"). rollback_command gets the same.
//
// Settings checked at load (so by --check-config): `workdir` must be an existing directory, and
// every name under `env:` must be set in orgd's environment.
//
// The command dies with orgd: the child asks for SIGKILL when its parent goes (PR_SET_PDEATHSIG),
// so a killed orgd never leaves a deploy running that a resumed deploy would start a second time.
// Linux sends that signal when the *thread* that forked exits, not the process; start() and
// rollback() fork on the calling thread and wait there for the command, and the orchestrator keeps
// that worker thread for the whole step, so the signal comes only when orgd itself dies. The
// signal reaches the shell alone: processes the command leaves in the background, or children of
// a compound command, are not killed with it.
//
// With a state directory (the provider's data dir) every start() leaves files that outlive orgd,
// under <data_dir>/exec/<repo>/<env>/:
//   <deploy_id>.<attempt>.started  written before the command starts;
//   <deploy_id>.<attempt>.json     {exit_code, status, error, finished_at} once it has ended
//                                  (exit_code is null when there is none: timeout, signal).
// recover() reads them: result → that result; marker alone → orgd died while the command ran
// (and the command with it) → interrupted, "interrupted: ..." (run again as a new attempt);
// neither → not_found. Without a state directory (targets built directly in tests) no files are
// written and recover() knows nothing.
class ExecDeployTarget final : public DeployTarget {
 public:
  struct Settings {
    std::string command;
    std::string workdir = ".";
    Duration timeout = std::chrono::minutes{10};
    std::optional<std::string> rollback_command;
    // The command's environment besides the deploy variables: the allow-list (PATH, HOME, LANG,
    // TZ) and the names under `env:`, with their values from orgd's environment.
    std::map<std::string, std::string> environment;
    // The vault's view of the repo's secrets; null: the command gets none.
    std::shared_ptr<RepoSecrets> repo_secrets;
  };

  static constexpr std::size_t kMaxLines = 1000;
  static constexpr std::size_t kMaxLineBytes = 1000;
  // A failure's error ends with the command's last output line, cut to this many bytes.
  static constexpr std::size_t kMaxErrorLine = 300;
  static constexpr std::size_t kMaxResults = 100;  // results kept in memory for poll()
  static constexpr const char* kInterrupted = "interrupted: orgd stopped while the command ran";

  explicit ExecDeployTarget(Settings settings, std::string state_dir = {},
                            std::shared_ptr<const Clock> clock = std::make_shared<SystemClock>());

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  // context.handle is the deploy id (the deploy id itself when empty); the attempt comes from
  // `context`. Falls back to the result file when this object has not run the deploy (it was
  // run before a restart).
  Result<DeployProgress> poll(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return settings_.rollback_command.has_value(); }
  // `timeout`, then the kill grace and the output drain.
  std::optional<Duration> max_call_duration() const override;
  Result<DeployProgress> recover(const DeployContext& context) override;

 private:
  // The deploy's state files without their extension, or an error when a part is unusable.
  Result<std::string> state_stem(const DeployContext& context) const;
  Result<DeployProgress> read_result(const DeployContext& context) const;
  void remember(const std::string& key, const DeployProgress& result);

  Settings settings_;
  std::string state_dir_;
  std::shared_ptr<const Clock> clock_;
  std::mutex results_mutex_;                       // guards results_, results_order_ and running_
  std::map<std::string, DeployProgress> results_;  // by "<deploy_id>.<attempt>"
  std::deque<std::string> results_order_;
  std::set<std::string> running_;  // commands of this process still running, same keys
};

class ExecProvider final : public Provider {
 public:
  ExecProvider(std::string name, std::string data_dir, std::shared_ptr<const Clock> clock,
               Environment environment = {}, std::shared_ptr<RepoSecrets> repo_secrets = nullptr)
      : Provider(std::move(name), "exec"),
        data_dir_(std::move(data_dir)),
        clock_(std::move(clock)),
        environment_(std::move(environment)),
        repo_secrets_(std::move(repo_secrets)) {}

  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                   const std::string& source_file) override;
  Capabilities capabilities() const override { return {.deploy_target = true}; }

 private:
  std::string data_dir_;
  std::shared_ptr<const Clock> clock_;
  Environment environment_;  // orgd's: where `env:` values and the allow-list come from
  std::shared_ptr<RepoSecrets> repo_secrets_;  // null without a vault
};

std::unique_ptr<Provider> make_exec_provider(const ProviderConfig& config,
                                             const ProviderServices& services,
                                             const std::string& source_file);

}  // namespace orgd
