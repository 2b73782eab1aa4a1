#pragma once

// GitHub Actions workflows as a deploy target (cloud-apis.md §1.1, §1.2): a deploy dispatches
// the target's `workflow` on `dispatch_ref` with its `inputs` (placeholders expanded), follows
// the run it started to its conclusion, and keeps a GitHub Deployment of the step (statuses
// in_progress, then success or failure, log_url the run) so the repo's Environments page shows
// orgd's deploys. Cancel cancels the run; rollback dispatches the workflow again with the
// previous successful deploy's ref and waits for that run.
//
// The handle says what is known, so a resumed deploy never dispatches twice:
//   run=<run id>;deployment=<deployment id>     the run is known
//   deployment=<deployment id>;since=<epoch s>  dispatched; its run is looked for among the
//                                               workflow_dispatch runs created since then whose
//                                               title names the deploy id
// (deployment= is left out with `deployments: false`). GitHub returns the run's id with the
// dispatch where it supports `return_run_details` (github.com since 2026-02); elsewhere (older
// GHES) the run is found by its title: the workflow's `run-name` must contain the deploy id,
// e.g. `run-name: deploy ${{ inputs.deploy_id }}` with `inputs: {deploy_id: ${ORGD_DEPLOY_ID}}`.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/plugin/provider.hpp"
#include "plugins/github/rest_client.hpp"

namespace orgd::github {

struct WorkflowTarget {
  std::string owner;
  std::string repo;
  std::string workflow;  // file name (deploy.yml) or id
  std::string dispatch_ref = "main";
  std::map<std::string, std::string> inputs;  // values may hold ${ORGD_*} placeholders
  std::string environment;                    // the GitHub environment; default: orgd's env
  bool deployments = true;
  bool return_run_details = true;
  std::chrono::milliseconds poll_interval{10'000};
};

// repos.<repo>.deploy.<env> of a github provider. ConfigError naming file:line:key.
WorkflowTarget parse_workflow_target(const DeployTargetConfig& target,
                                     const std::string& source_file, const Settings& settings,
                                     const std::string& repo);

// `text` with ${ORGD_REF}, ${ORGD_ENV}, ${ORGD_REPO} and ${ORGD_DEPLOY_ID} replaced.
std::string expand_placeholders(const std::string& text, const DeployContext& context);

// What a handle says (see above); nullopt for one this target did not write.
struct WorkflowHandle {
  std::string run_id;
  std::string deployment_id;
  std::int64_t since = 0;  // epoch seconds, while the run is not known
  std::string text() const;
};
std::optional<WorkflowHandle> parse_workflow_handle(const std::string& handle);

class WorkflowDeployTarget final : public DeployTarget {
 public:
  WorkflowDeployTarget(std::shared_ptr<RestClient> api, WorkflowTarget target);

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  bool can_cancel() const override { return true; }
  Result<DeployProgress> cancel(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return true; }
  Result<DeployProgress> recover(const DeployContext& context) override;
  // "run=<run id>": what a workflow_run webhook names the deploy by.
  std::string watch_key(const std::string& handle) const override;

 private:
  std::string repo_path() const;  // /repos/<owner>/<repo>
  // Dispatches the workflow for `context` with `ref` as ${ORGD_REF}; creates the Deployment
  // first (with `description`). The progress carries the handle.
  Result<DeployProgress> dispatch(const DeployContext& context, const std::string& ref,
                                  const std::string& description, const LogSink& log);
  Result<std::string> create_deployment(const DeployContext& context, const std::string& ref,
                                        const std::string& description);
  void post_status(const DeployContext& context, const std::string& deployment_id,
                   const std::string& state, const std::string& log_url,
                   const std::string& description);
  // The workflow_dispatch run whose title names the deploy, created at `since` or later.
  Result<std::optional<std::string>> find_run(const DeployContext& context, std::int64_t since);
  Result<DeployProgress> progress_of(const DeployContext& context, WorkflowHandle handle);

  std::shared_ptr<RestClient> api_;
  WorkflowTarget target_;
};

}  // namespace orgd::github
