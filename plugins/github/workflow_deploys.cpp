#include "plugins/github/workflow_deploys.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <thread>
#include <utility>

#include "daemon/core/timestamps.hpp"
#include "daemon/core/yaml_schema.hpp"

namespace orgd::github {

namespace {

using std::chrono::steady_clock;

// GitHub's limit on a dispatch's inputs (raised from 10 on 2025-12-04).
constexpr std::size_t kMaxInputs = 25;
// A Deployment status's description is cut by GitHub at 140 characters.
constexpr std::size_t kMaxStatusDescription = 140;
// Runs created this long before the dispatch still count: the two clocks differ.
constexpr std::int64_t kClockSkewSeconds = 30;

const char* const kPlaceholders[] = {"${ORGD_REF}", "${ORGD_ENV}", "${ORGD_REPO}",
                                     "${ORGD_DEPLOY_ID}"};

std::int64_t epoch_seconds(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string string_field(const nlohmann::json& json, const char* key) {
  if (!json.is_object()) return {};
  const auto it = json.find(key);
  if (it == json.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<std::int64_t>());
  return {};
}

std::string cut(std::string text, std::size_t max) {
  if (text.size() > max) text.resize(max);
  return text;
}

}  // namespace

std::string expand_placeholders(const std::string& text, const DeployContext& context) {
  std::string out = text;
  const std::pair<const char*, const std::string*> values[] = {
      {"${ORGD_REF}", &context.ref},
      {"${ORGD_ENV}", &context.env},
      {"${ORGD_REPO}", &context.repo},
      {"${ORGD_DEPLOY_ID}", &context.deploy_id}};
  for (const auto& [name, value] : values) {
    const std::string key = name;
    for (auto at = out.find(key); at != std::string::npos; at = out.find(key, at + value->size())) {
      out.replace(at, key.size(), *value);
    }
  }
  return out;
}

WorkflowTarget parse_workflow_target(const DeployTargetConfig& target,
                                     const std::string& source_file, const Settings& settings,
                                     const std::string& repo) {
  SettingsReader reader = target_settings(target, source_file);
  WorkflowTarget out;
  out.owner = settings.owner;
  out.workflow = reader.required_string("workflow");
  out.repo = reader.string("repo").value_or(repo);
  out.dispatch_ref = reader.string("dispatch_ref").value_or(out.dispatch_ref);
  out.environment = reader.string("environment").value_or(target.env);
  out.deployments = reader.boolean("deployments", out.deployments);
  out.return_run_details = reader.boolean("return_run_details", out.return_run_details);
  out.poll_interval = reader.duration("poll_interval", out.poll_interval);
  if (out.poll_interval < std::chrono::seconds{1}) {
    reader.invalid("poll_interval", "at least 1s: GitHub's API is not polled faster");
  }
  if (auto inputs = reader.string_map("inputs")) {
    if (inputs->size() > kMaxInputs) {
      reader.invalid("inputs", fmt::format("at most {} inputs (GitHub's limit)", kMaxInputs));
    }
    for (const auto& [name, value] : *inputs) {
      // Every ${...} must be one orgd knows, so a typo fails at load, not in the workflow.
      for (auto at = value.find("${"); at != std::string::npos; at = value.find("${", at + 2)) {
        const auto end = value.find('}', at);
        const std::string used = value.substr(at, end == std::string::npos ? std::string::npos
                                                                            : end - at + 1);
        if (std::find(std::begin(kPlaceholders), std::end(kPlaceholders), used) ==
            std::end(kPlaceholders)) {
          reader.invalid("inputs", fmt::format("{}: unknown placeholder {} (known: ${{ORGD_REF}}, "
                                               "${{ORGD_ENV}}, ${{ORGD_REPO}}, ${{ORGD_DEPLOY_ID}})",
                                               name, used));
        }
      }
    }
    out.inputs = std::move(*inputs);
  }
  if (out.owner.empty()) {
    reader.invalid("provider", "the github provider has no owner (set providers.<name>.owner)");
  }
  reader.finish();
  return out;
}

std::string WorkflowHandle::text() const {
  std::string out;
  if (!run_id.empty()) out = "run=" + run_id;
  if (!deployment_id.empty()) out += (out.empty() ? "" : ";") + std::string("deployment=") + deployment_id;
  if (run_id.empty()) out += (out.empty() ? "" : ";") + std::string("since=") + std::to_string(since);
  return out;
}

std::optional<WorkflowHandle> parse_workflow_handle(const std::string& handle) {
  WorkflowHandle out;
  std::size_t at = 0;
  bool any = false;
  while (at <= handle.size()) {
    const auto end = std::min(handle.find(';', at), handle.size());
    const std::string part = handle.substr(at, end - at);
    const auto eq = part.find('=');
    if (eq == std::string::npos) return std::nullopt;
    const std::string key = part.substr(0, eq);
    const std::string value = part.substr(eq + 1);
    const bool digits = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (!digits) return std::nullopt;
    if (key == "run") {
      out.run_id = value;
    } else if (key == "deployment") {
      out.deployment_id = value;
    } else if (key == "since") {
      std::from_chars(value.data(), value.data() + value.size(), out.since);
    } else {
      return std::nullopt;
    }
    any = true;
    at = end + 1;
  }
  if (!any) return std::nullopt;
  return out;
}

WorkflowDeployTarget::WorkflowDeployTarget(std::shared_ptr<RestClient> api, WorkflowTarget target)
    : api_(std::move(api)), target_(std::move(target)) {}

std::string WorkflowDeployTarget::repo_path() const {
  return fmt::format("/repos/{}/{}", path_segment(target_.owner), path_segment(target_.repo));
}

Result<std::string> WorkflowDeployTarget::create_deployment(const DeployContext& context,
                                                            const std::string& ref,
                                                            const std::string& description) {
  // auto_merge off (orgd deploys the ref it was given, it does not merge), no required contexts
  // (orgd's own health gate decides; pending checks would refuse it with 409).
  const nlohmann::json body = {
      {"ref", ref},
      {"auto_merge", false},
      {"required_contexts", nlohmann::json::array()},
      {"environment", target_.environment},
      {"description", cut(description, kMaxStatusDescription)},
      {"payload", {{"orgd_deploy_id", context.deploy_id}, {"attempt", context.attempt}}},
  };
  auto created = api_->call("creating a Deployment of " + target_.repo, "POST",
                            repo_path() + "/deployments", body.dump(), context.deadline,
                            /*idempotent=*/false);
  if (!created) return created.error();
  const std::string id = string_field(created.value(), "id");
  // 202: GitHub merged the default branch instead of creating one (auto_merge is off, so only an
  // API that ignores it answers this way).
  if (id.empty()) {
    return unavailable("creating a Deployment of " + target_.repo + ": GitHub created none (" +
                       cut(string_field(created.value(), "message"), 200) + ")");
  }
  return id;
}

void WorkflowDeployTarget::post_status(const DeployContext& context,
                                       const std::string& deployment_id, const std::string& state,
                                       const std::string& log_url,
                                       const std::string& description) {
  if (deployment_id.empty()) return;
  nlohmann::json body = {{"state", state},
                         {"description", cut(description, kMaxStatusDescription)},
                         {"environment", target_.environment}};
  if (!log_url.empty()) body["log_url"] = log_url;
  // The Deployment is for people reading the Environments page; a status that does not get
  // there does not change the deploy.
  (void)api_->call("setting the Deployment status of " + target_.repo, "POST",
                   repo_path() + "/deployments/" + deployment_id + "/statuses", body.dump(),
                   context.deadline, /*idempotent=*/false);
}

Result<DeployProgress> WorkflowDeployTarget::dispatch(const DeployContext& context,
                                                      const std::string& ref,
                                                      const std::string& description,
                                                      const LogSink& log) {
  WorkflowHandle handle;
  if (target_.deployments) {
    auto deployment = create_deployment(context, ref.empty() ? target_.dispatch_ref : ref,
                                        description);
    if (!deployment) return deployment.error();
    handle.deployment_id = deployment.value();
  }
  DeployContext with_ref = context;
  with_ref.ref = ref;
  nlohmann::json inputs = nlohmann::json::object();
  for (const auto& [name, value] : target_.inputs) inputs[name] = expand_placeholders(value, with_ref);
  nlohmann::json body = {{"ref", target_.dispatch_ref}, {"inputs", inputs}};
  handle.since = epoch_seconds(api_->clock().now()) - kClockSkewSeconds;
  const std::string path = repo_path() + "/actions/workflows/" + path_segment(target_.workflow) +
                           "/dispatches";
  const std::string what = "dispatching " + target_.workflow + " of " + target_.repo;
  Result<nlohmann::json> dispatched = nlohmann::json{};
  if (target_.return_run_details) {
    body["return_run_details"] = true;
    dispatched = api_->call(what, "POST", path, body.dump(), context.deadline, false);
    // Older GHES refuses the field (400/422): the same dispatch without it.
    if (!dispatched && dispatched.error().code == ErrorCode::invalid_argument) {
      body.erase("return_run_details");
      dispatched = api_->call(what, "POST", path, body.dump(), context.deadline, false);
    }
  } else {
    dispatched = api_->call(what, "POST", path, body.dump(), context.deadline, false);
  }
  if (!dispatched) {
    post_status(context, handle.deployment_id, "error", "", "orgd could not dispatch the workflow");
    return dispatched.error();
  }
  DeployProgress progress{DeployStatus::running};
  progress.next_poll_after = target_.poll_interval;
  handle.run_id = string_field(dispatched.value(), "workflow_run_id");
  progress.url = string_field(dispatched.value(), "html_url");
  if (!handle.run_id.empty()) {
    progress.detail = "run " + handle.run_id + " dispatched";
    post_status(context, handle.deployment_id, "in_progress", progress.url,
                "orgd deploy " + context.deploy_id);
  } else {
    progress.detail = "dispatched; looking for its run";
  }
  progress.handle = handle.text();
  if (log) log(fmt::format("dispatched {} on {} ({})", target_.workflow, target_.dispatch_ref,
                           progress.detail));
  return progress;
}

Result<DeployProgress> WorkflowDeployTarget::start(const DeployContext& context,
                                                   const LogSink& log) {
  return dispatch(context, context.ref, "orgd deploy " + context.deploy_id, log);
}

Result<std::optional<std::string>> WorkflowDeployTarget::find_run(const DeployContext& context,
                                                                   std::int64_t since) {
  std::string path = repo_path() + "/actions/workflows/" + path_segment(target_.workflow) +
                     "/runs?event=workflow_dispatch&per_page=100";
  if (since > 0) {
    path += "&created=%3E%3D" + format_rfc3339(Clock::time_point{std::chrono::seconds{since}});
  }
  auto page = api_->call("looking for the run of " + context.deploy_id, "GET", path, {},
                         context.deadline);
  if (!page) return page.error();
  const auto runs = page.value().is_object() ? page.value().find("workflow_runs") : page.value().end();
  if (runs == page.value().end() || !runs->is_array()) return std::optional<std::string>{};
  // Newest first: the run of the attempt now in flight.
  for (const auto& run : *runs) {
    const std::string title = string_field(run, "display_title") + " " + string_field(run, "name");
    if (title.find(context.deploy_id) != std::string::npos) {
      return std::optional<std::string>{string_field(run, "id")};
    }
  }
  return std::optional<std::string>{};
}

Result<DeployProgress> WorkflowDeployTarget::progress_of(const DeployContext& context,
                                                         WorkflowHandle handle) {
  DeployProgress progress{DeployStatus::running};
  progress.next_poll_after = target_.poll_interval;
  const bool found_now = handle.run_id.empty();
  if (handle.run_id.empty()) {
    auto found = find_run(context, handle.since);
    if (!found) return found.error();
    if (!found.value()) {
      progress.handle = handle.text();
      progress.detail = "dispatched; its run has not appeared yet";
      return progress;
    }
    handle.run_id = *found.value();
  }
  progress.handle = handle.text();
  auto run = api_->call("reading run " + handle.run_id, "GET",
                        repo_path() + "/actions/runs/" + handle.run_id, {}, context.deadline);
  if (!run) return run.error();
  const std::string status = string_field(run.value(), "status");
  const std::string conclusion = string_field(run.value(), "conclusion");
  progress.url = string_field(run.value(), "html_url");
  if (status != "completed") {
    progress.detail = "run " + handle.run_id + ": " + (status.empty() ? "queued" : status);
    // Found by its title just now: the Deployment learns its run.
    if (found_now) {
      post_status(context, handle.deployment_id, "in_progress", progress.url,
                  "orgd deploy " + context.deploy_id);
    }
    return progress;
  }
  progress.next_poll_after.reset();
  progress.detail = "run " + handle.run_id + ": " + conclusion;
  if (conclusion == "success") {
    progress.status = DeployStatus::succeeded;
    post_status(context, handle.deployment_id, "success", progress.url,
                "orgd deploy " + context.deploy_id + " succeeded");
  } else {
    // failure, cancelled, timed_out, action_required, startup_failure, stale, neutral, skipped:
    // the workflow did not deploy.
    progress.status = DeployStatus::failed;
    progress.error = "run " + handle.run_id + " concluded " +
                     (conclusion.empty() ? std::string{"without a conclusion"} : conclusion);
    post_status(context, handle.deployment_id, "failure", progress.url,
                "orgd deploy " + context.deploy_id + ": " + progress.error);
  }
  return progress;
}

Result<DeployProgress> WorkflowDeployTarget::poll(const DeployContext& context) {
  auto handle = parse_workflow_handle(context.handle);
  if (!handle) {
    return permanent(invalid_argument("github: not a workflow deploy handle: " + context.handle));
  }
  return progress_of(context, *handle);
}

Result<DeployProgress> WorkflowDeployTarget::recover(const DeployContext& context) {
  // orgd died between the dispatch and writing its handle: a run that names the deploy is it.
  auto found = find_run(context, 0);
  if (!found) return found.error();
  if (!found.value()) {
    return not_found("github: no run of " + target_.workflow + " names deploy " + context.deploy_id);
  }
  WorkflowHandle handle;
  handle.run_id = *found.value();
  return progress_of(context, handle);
}

std::string WorkflowDeployTarget::watch_key(const std::string& handle) const {
  const auto parsed = parse_workflow_handle(handle);
  return parsed && !parsed->run_id.empty() ? "run=" + parsed->run_id : std::string{};
}

Result<DeployProgress> WorkflowDeployTarget::cancel(const DeployContext& context) {
  auto handle = parse_workflow_handle(context.handle);
  if (!handle) {
    return permanent(invalid_argument("github: not a workflow deploy handle: " + context.handle));
  }
  if (handle->run_id.empty()) {
    auto found = find_run(context, handle->since);
    if (!found) return found.error();
    if (!found.value()) return progress_of(context, *handle);
    handle->run_id = *found.value();
  }
  auto sent = api_->send("POST", repo_path() + "/actions/runs/" + handle->run_id + "/cancel", {},
                         context.deadline, false);
  if (!sent) return sent.error();
  // 409: the run completed already; either way its state now says what it became.
  if (sent.value().status != 202 && sent.value().status != 409) {
    return github_error("cancelling run " + handle->run_id, sent.value(), api_->clock().now());
  }
  return progress_of(context, *handle);
}

Result<DeployProgress> WorkflowDeployTarget::rollback(const DeployContext& context,
                                                      const LogSink& log) {
  if (!context.previous || context.previous->ref.empty()) {
    return permanent(invalid_argument("github: no earlier successful deploy of " + context.repo +
                                      " to " + context.env + " is known to roll back to"));
  }
  DeployContext back = context;
  back.ref = context.previous->ref;
  auto started = dispatch(back, back.ref, "orgd rollback of " + context.deploy_id, log);
  if (!started) return started.error();
  // The orchestrator waits for a rollback's call to end: it is followed here, within the call's
  // deadline.
  DeployProgress progress = started.value();
  while (progress.status == DeployStatus::running) {
    const auto wait = target_.poll_interval;
    if (steady_clock::now() + wait >= context.deadline) {
      return unavailable("github: the rollback run did not finish before the deadline (" +
                         progress.detail + ")");
    }
    std::this_thread::sleep_for(wait);
    back.handle = progress.handle;
    auto polled = poll(back);
    if (!polled) {
      if (polled.error().retry == Retry::permanent) return polled.error();
      continue;
    }
    progress = polled.value();
  }
  return progress;
}

}  // namespace orgd::github
