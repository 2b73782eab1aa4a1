#pragma once

// Cloudflare Containers as a deploy target (cloud-apis.md §2.7): a deploy rolls the target's
// `application` out to `image` through the rollouts API (POST …/containers/applications/{id}/
// rollouts, strategy rolling in step_percentage or steps, kind full_auto → 201) and follows the
// rollout until it is completed (succeeded) or reverted (failed); orgd's health gate runs after.
// Only the create call is in Cloudflare's public reference: the rollout is read with
// GET …/rollouts/{rollout_id}, and when that is not answered (404, 405) from the application
// itself (its active rollout, its image). Rollback rolls the previous image out and waits for it.
//
// The handle:  rollout=<id>;image=<the image rolled out>;previous=<the image before>

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "daemon/plugin/provider.hpp"
#include "plugins/cloudflare/cloudflare_settings.hpp"
#include "plugins/cloudflare/rest_client.hpp"

namespace orgd::cloudflare {

struct RolloutHandle {
  std::string rollout;
  std::string image;
  std::string previous;
  std::string text() const;
};
std::optional<RolloutHandle> parse_rollout_handle(const std::string& handle);

// The body of a rollout of `image` for `target`.
nlohmann::json rollout_body(const ContainersTarget& target, const std::string& image,
                            const std::string& description);

class ContainersDeployTarget final : public DeployTarget {
 public:
  ContainersDeployTarget(std::shared_ptr<RestClient> api, ContainersTarget target);

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return true; }

 private:
  std::string app_path() const;  // /accounts/<id>/containers/applications/<application>
  Result<nlohmann::json> application(const DeployContext& context);
  Result<RolloutHandle> roll_out(const DeployContext& context, const std::string& image,
                                 const std::string& previous, const std::string& description,
                                 const ContainersTarget& how);
  Result<DeployProgress> progress_of(const DeployContext& context, const RolloutHandle& handle);

  std::shared_ptr<RestClient> api_;
  ContainersTarget target_;
};

}  // namespace orgd::cloudflare
