#pragma once

// Workers as a deploy target (cloud-apis.md §2.4). A deploy uploads a version of the target's
// `dir` (POST …/workers/scripts/{script}/versions, multipart: metadata first, then the module
// files; annotations name the orgd deploy; keep_bindings keeps the Worker's secrets), then
// deploys it with the percentage strategy through `steps`: each partial step is reported as
// phase_done so orgd runs its health gate, and advance() moves to the next percentage; the step
// of 100 succeeds the deploy. rollback() deploys the version that served before at 100%, again
// with ?force=true when Cloudflare refuses because secrets changed since (code 10220).
// recover() finds the version an attempt uploaded by its annotation, so a crash between the
// upload and the deployment never uploads twice.
//
// The handle:  version=<uploaded id>;previous=<the id that served before, or empty>;phase=<n>
// (phase: the step now out, 1-based).

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "daemon/plugin/provider.hpp"
#include "plugins/cloudflare/cloudflare_settings.hpp"
#include "plugins/cloudflare/rest_client.hpp"

namespace orgd::cloudflare {

// Cloudflare's refusal to deploy an older version across changed secrets (wrangler's
// CANNOT_ROLLBACK_WITH_MODIFIED_SECERT_CODE).
inline constexpr std::int64_t kSecretsChangedCode = 10220;
// Cloudflare's limits on a version's annotations.
inline constexpr std::size_t kMaxMessageBytes = 1000;
inline constexpr std::size_t kMaxTagBytes = 100;

struct WorkerHandle {
  std::string version;
  std::string previous;
  int phase = 1;
  std::string text() const;
};
std::optional<WorkerHandle> parse_worker_handle(const std::string& handle);

// "orgd deploy <id> attempt <n>": what an uploaded version's workers/message starts with.
std::string deploy_marker(const DeployContext& context);

// The metadata part of a version upload.
nlohmann::json version_metadata(const WorkersTarget& target, const DeployContext& context);

class WorkersDeployTarget final : public DeployTarget {
 public:
  WorkersDeployTarget(std::shared_ptr<RestClient> api, WorkersTarget target);

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  Result<DeployProgress> advance(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return true; }
  Result<DeployProgress> recover(const DeployContext& context) override;

 private:
  std::string script_path() const;  // /accounts/<id>/workers/scripts/<script>
  // The deployment serving now (the first of the list), null when there is none.
  Result<nlohmann::json> live_deployment(const DeployContext& context);
  Result<std::vector<nlohmann::json>> deployments(const DeployContext& context);
  // The version this attempt uploaded, by its annotation; "" when there is none.
  Result<std::string> find_uploaded(const DeployContext& context);
  Result<std::string> upload(const DeployContext& context, const LogSink& log);
  // A deployment of `version` at `percent` (the rest to `previous`), forced when said.
  Result<Envelope> deploy(const DeployContext& context, const std::string& version, int percent,
                          const std::string& previous, const std::string& message, bool force);
  // Puts step `index` (0-based) of `steps` out and says where the deploy stands.
  Result<DeployProgress> put_out(const DeployContext& context, WorkerHandle handle,
                                 std::size_t index, const LogSink& log);
  // Where the deploy stands as the live deployment shows it.
  Result<DeployProgress> progress_of(const DeployContext& context, const WorkerHandle& handle,
                                     const nlohmann::json& live);

  std::shared_ptr<RestClient> api_;
  WorkersTarget target_;
};

// The version with the largest share of a deployment ("" when it has none).
std::string main_version(const nlohmann::json& deployment);
// The percentage `version` has in `deployment` (nullopt when it is not in it).
std::optional<double> share_of(const nlohmann::json& deployment, const std::string& version);

}  // namespace orgd::cloudflare
