#include "plugins/cloudflare/containers_deploys.hpp"

#include <fmt/format.h>

#include <thread>
#include <utility>

namespace orgd::cloudflare {

namespace {

using std::chrono::steady_clock;

// The image an application runs: configuration.image (or image).
std::string image_of(const nlohmann::json& app) {
  if (!app.is_object()) return {};
  if (const auto c = app.find("configuration"); c != app.end() && c->is_object()) {
    const std::string image = string_field(*c, "image");
    if (!image.empty()) return image;
  }
  return string_field(app, "image");
}

std::string progress_text(const nlohmann::json& rollout) {
  const auto progress = rollout.is_object() ? rollout.find("progress") : rollout.end();
  if (progress == rollout.end() || !progress->is_object()) return {};
  std::string out;
  for (const auto& [key, value] : progress->items()) {
    if (!value.is_number_integer() && !value.is_string()) continue;
    if (!out.empty()) out += ", ";
    out += key + " " + (value.is_string() ? value.get<std::string>() : value.dump());
    if (out.size() > 200) break;
  }
  return out;
}

}  // namespace

std::string RolloutHandle::text() const {
  return fmt::format("rollout={};image={};previous={}", rollout, image, previous);
}

std::optional<RolloutHandle> parse_rollout_handle(const std::string& handle) {
  RolloutHandle out;
  std::size_t at = 0;
  while (at <= handle.size()) {
    const auto end = std::min(handle.find(';', at), handle.size());
    const std::string part = handle.substr(at, end - at);
    const auto eq = part.find('=');
    if (eq == std::string::npos) return std::nullopt;
    const std::string key = part.substr(0, eq);
    std::string value = part.substr(eq + 1);
    if (key == "rollout") {
      out.rollout = std::move(value);
    } else if (key == "image") {
      out.image = std::move(value);
    } else if (key == "previous") {
      out.previous = std::move(value);
    } else {
      return std::nullopt;
    }
    at = end + 1;
  }
  if (out.rollout.empty() || out.rollout.find_first_of("/?#% ") != std::string::npos) {
    return std::nullopt;
  }
  return out;
}

nlohmann::json rollout_body(const ContainersTarget& target, const std::string& image,
                            const std::string& description) {
  nlohmann::json body = {{"description", description},
                         {"strategy", "rolling"},
                         {"kind", target.kind},
                         {"target_configuration", {{"image", image}}}};
  if (!target.steps.empty()) {
    nlohmann::json steps = nlohmann::json::array();
    for (std::size_t i = 0; i < target.steps.size(); ++i) {
      steps.push_back({{"description", fmt::format("step {} of {}", i + 1, target.steps.size())},
                       {"step_size", {{"percentage", target.steps[i]}}}});
    }
    body["steps"] = steps;
  } else {
    body["step_percentage"] = target.step_percentage == 0 ? 100 : target.step_percentage;
  }
  return body;
}

ContainersDeployTarget::ContainersDeployTarget(std::shared_ptr<RestClient> api,
                                               ContainersTarget target)
    : api_(std::move(api)), target_(std::move(target)) {}

std::string ContainersDeployTarget::app_path() const {
  return api_->account_path() + "/containers/applications/" + path_segment(target_.application);
}

Result<nlohmann::json> ContainersDeployTarget::application(const DeployContext& context) {
  RestClient::Request request;
  request.path = app_path();
  request.deadline = context.deadline;
  auto answer = api_->call("reading Containers application " + target_.application, request);
  if (!answer) return answer.error();
  if (!answer.value().result.is_object()) {
    return unavailable("reading Containers application " + target_.application +
                       ": Cloudflare's result is not an application");
  }
  return std::move(answer.value().result);
}

Result<RolloutHandle> ContainersDeployTarget::roll_out(const DeployContext& context,
                                                       const std::string& image,
                                                       const std::string& previous,
                                                       const std::string& description,
                                                       const ContainersTarget& how) {
  RestClient::Request request;
  request.method = "POST";
  request.path = app_path() + "/rollouts";
  request.body = rollout_body(how, image, description).dump();
  request.deadline = context.deadline;
  request.idempotent = false;
  const std::string what = "rolling Containers application " + target_.application + " out to " + image;
  auto answer = api_->call(what, request);
  if (!answer) return answer.error();
  RolloutHandle handle{string_field(answer.value().result, "id"), image, previous};
  if (handle.rollout.empty() || handle.rollout.find_first_of("/?#%; ") != std::string::npos) {
    return unavailable(what + ": Cloudflare's result has no rollout id");
  }
  return handle;
}

Result<DeployProgress> ContainersDeployTarget::start(const DeployContext& context,
                                                     const LogSink& log) {
  auto app = application(context);
  if (!app) return app.error();
  const std::string previous = image_of(app.value());
  auto handle = roll_out(context, target_.image, previous,
                         fmt::format("orgd deploy {} attempt {}: {} {} to {}", context.deploy_id,
                                     context.attempt, context.repo, context.ref, context.env),
                         target_);
  if (!handle) return handle.error();
  if (log) {
    log(fmt::format("rollout {} of {} started: {} (was {})", handle.value().rollout,
                    target_.application, target_.image, previous.empty() ? "unknown" : previous));
  }
  DeployProgress progress{DeployStatus::running, handle.value().text()};
  progress.detail = "rollout " + handle.value().rollout + " started";
  progress.next_poll_after = target_.poll_interval;
  return progress;
}

Result<DeployProgress> ContainersDeployTarget::progress_of(const DeployContext& context,
                                                           const RolloutHandle& handle) {
  DeployProgress progress{DeployStatus::running, handle.text()};
  progress.next_poll_after = target_.poll_interval;
  RestClient::Request request;
  request.path = app_path() + "/rollouts/" + path_segment(handle.rollout);
  request.deadline = context.deadline;
  auto answer = api_->exchange("reading rollout " + handle.rollout, request);
  if (!answer) return answer.error();
  const Envelope& e = answer.value();
  if (e.status == 404 || e.status == 405) {
    // The rollout cannot be read by id (not a public endpoint everywhere): the application says
    // whether it still rolls this one out, or runs the image.
    auto app = application(context);
    if (!app) return app.error();
    const std::string active = string_field(app.value(), "active_rollout_id");
    if (!active.empty() && active == handle.rollout) {
      progress.detail = "rollout " + handle.rollout + " in progress (from the application)";
    } else if (image_of(app.value()) == handle.image) {
      progress.status = DeployStatus::succeeded;
      progress.detail = "application runs " + handle.image;
    } else {
      progress.detail = "waiting for the application to run " + handle.image;
    }
    return progress;
  }
  if (!e.success || e.status / 100 != 2) return envelope_error("reading rollout " + handle.rollout, e);
  const std::string status = string_field(e.result, "status");
  const std::string moving = progress_text(e.result);
  progress.detail = "rollout " + handle.rollout + ": " + (status.empty() ? "pending" : status) +
                    (moving.empty() ? "" : " (" + moving + ")");
  if (status == "completed") {
    progress.status = DeployStatus::succeeded;
    progress.next_poll_after.reset();
  } else if (status == "reverted" || status == "replaced") {
    progress.status = DeployStatus::failed;
    progress.next_poll_after.reset();
    progress.error = "rollout " + handle.rollout + " was " + status +
                     (status == "reverted" ? " by Cloudflare (its health checks failed)"
                                           : " by another rollout");
  }
  return progress;
}

Result<DeployProgress> ContainersDeployTarget::poll(const DeployContext& context) {
  const auto handle = parse_rollout_handle(context.handle);
  if (!handle) {
    return permanent(invalid_argument("cloudflare: not a rollout handle: " + context.handle));
  }
  return progress_of(context, *handle);
}

Result<DeployProgress> ContainersDeployTarget::rollback(const DeployContext& context,
                                                        const LogSink& log) {
  std::string image;
  if (const auto mine = parse_rollout_handle(context.handle); mine && !mine->previous.empty()) {
    image = mine->previous;
  } else if (context.previous) {
    if (const auto before = parse_rollout_handle(context.previous->handle)) image = before->image;
  }
  if (image.empty()) {
    return permanent(invalid_argument("cloudflare: no earlier image of Containers application " +
                                      target_.application + " is known to roll back to"));
  }
  // Back at once: all instances in one step.
  ContainersTarget fast = target_;
  fast.steps.clear();
  fast.step_percentage = 100;
  auto handle = roll_out(context, image, {}, "orgd rollback of deploy " + context.deploy_id, fast);
  if (!handle) return handle.error();
  if (log) log("rollout " + handle.value().rollout + " rolls " + target_.application + " back to " + image);
  // The orchestrator waits for a rollback's call to end: the rollout is followed here, within
  // the call's deadline.
  for (;;) {
    auto progress = progress_of(context, handle.value());
    if (progress && progress.value().status != DeployStatus::running) return progress;
    if (!progress && progress.error().retry == Retry::permanent) return progress.error();
    const auto wait = !progress && progress.error().retry == Retry::rate_limited
                          ? std::max<Duration>(progress.error().retry_after, target_.poll_interval)
                          : Duration{target_.poll_interval};
    if (steady_clock::now() + wait >= context.deadline) {
      return unavailable("cloudflare: the rollback rollout " + handle.value().rollout +
                         " did not finish before the deadline");
    }
    std::this_thread::sleep_for(wait);
  }
}

}  // namespace orgd::cloudflare
