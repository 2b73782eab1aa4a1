#include "plugins/cloudflare/workers_deploys.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "plugins/cloudflare/multipart.hpp"

namespace orgd::cloudflare {

namespace {

// Versions read when looking for the one an attempt uploaded: the latest come first, and an
// attempt's upload is among the latest.
constexpr int kVersionsLooked = 50;

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

std::string cut(std::string text, std::size_t max) {
  if (text.size() > max) text.resize(max);
  return text;
}

std::string percent_text(double p) {
  return std::fabs(p - std::round(p)) < 1e-9 ? fmt::format("{}", static_cast<long>(std::round(p)))
                                              : fmt::format("{:.1f}", p);
}

std::string annotation(const nlohmann::json& item, const char* key) {
  if (!item.is_object()) return {};
  for (const auto* holder : {&item, item.contains("metadata") ? &item["metadata"] : nullptr}) {
    if (holder == nullptr || !holder->is_object()) continue;
    const auto annotations = holder->find("annotations");
    if (annotations != holder->end() && annotations->is_object()) {
      const std::string value = string_field(*annotations, key);
      if (!value.empty()) return value;
    }
  }
  return {};
}

// A deployment entry's version id: a string of id characters, else "".
std::string version_id_of(const nlohmann::json& entry) {
  if (!entry.is_object()) return {};
  const auto it = entry.find("version_id");
  if (it == entry.end() || !it->is_string()) return {};
  const std::string& id = it->get_ref<const std::string&>();
  return std::all_of(id.begin(), id.end(), id_char) ? id : std::string{};
}

}  // namespace

std::string WorkerHandle::text() const {
  return fmt::format("version={};previous={};phase={}", version, previous, phase);
}

std::optional<WorkerHandle> parse_worker_handle(const std::string& handle) {
  WorkerHandle out;
  bool has_version = false;
  std::size_t at = 0;
  while (at <= handle.size()) {
    const auto end = std::min(handle.find(';', at), handle.size());
    const std::string part = handle.substr(at, end - at);
    const auto eq = part.find('=');
    if (eq == std::string::npos) return std::nullopt;
    const std::string key = part.substr(0, eq);
    const std::string value = part.substr(eq + 1);
    if (!std::all_of(value.begin(), value.end(), id_char)) return std::nullopt;
    if (key == "version") {
      if (value.empty()) return std::nullopt;
      out.version = value;
      has_version = true;
    } else if (key == "previous") {
      out.previous = value;
    } else if (key == "phase") {
      if (value.empty() || value.size() > 3 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
      }
      out.phase = std::stoi(value);
    } else {
      return std::nullopt;
    }
    at = end + 1;
  }
  if (!has_version) return std::nullopt;
  return out;
}

std::string deploy_marker(const DeployContext& context) {
  return fmt::format("orgd deploy {} attempt {}", context.deploy_id, context.attempt);
}

nlohmann::json version_metadata(const WorkersTarget& target, const DeployContext& context) {
  nlohmann::json annotations = {
      {"workers/message",
       cut(fmt::format("{}: {} {} to {}", deploy_marker(context), context.repo,
                       context.ref.empty() ? std::string{"(no ref)"} : context.ref, context.env),
           kMaxMessageBytes)}};
  if (!context.ref.empty()) annotations["workers/tag"] = cut(context.ref, kMaxTagBytes);
  nlohmann::json metadata = {
      {"main_module", target.main_module},
      {"bindings", nlohmann::json::array()},
      // The Worker's secrets are set through the secrets API (a secret target), not here: they
      // stay as they are across uploads.
      {"keep_bindings", {"secret_text", "secret_key"}},
      {"annotations", annotations},
  };
  if (!target.compatibility_date.empty()) {
    metadata["compatibility_date"] = target.compatibility_date;
  }
  return metadata;
}

std::string main_version(const nlohmann::json& deployment) {
  std::string best;
  double best_share = -1;
  const auto versions = deployment.is_object() ? deployment.find("versions") : deployment.end();
  if (versions == deployment.end() || !versions->is_array()) return {};
  for (const auto& v : *versions) {
    const auto p = v.is_object() ? v.find("percentage") : v.end();
    const double share = p != v.end() && p->is_number() ? p->get<double>() : 0;
    const std::string id = version_id_of(v);
    if (!id.empty() && share > best_share) {
      best = id;
      best_share = share;
    }
  }
  return best;
}

std::optional<double> share_of(const nlohmann::json& deployment, const std::string& version) {
  const auto versions = deployment.is_object() ? deployment.find("versions") : deployment.end();
  if (versions == deployment.end() || !versions->is_array()) return std::nullopt;
  for (const auto& v : *versions) {
    if (version.empty() || version_id_of(v) != version) continue;
    const auto p = v.find("percentage");
    return p != v.end() && p->is_number() ? p->get<double>() : 0.0;
  }
  return std::nullopt;
}

WorkersDeployTarget::WorkersDeployTarget(std::shared_ptr<RestClient> api, WorkersTarget target)
    : api_(std::move(api)), target_(std::move(target)) {}

std::string WorkersDeployTarget::script_path() const {
  return api_->account_path() + "/workers/scripts/" + path_segment(target_.script);
}

Result<std::vector<nlohmann::json>> WorkersDeployTarget::deployments(const DeployContext& context) {
  // One answer, latest first (result: {deployments: [...]}); not paginated.
  RestClient::Request request;
  request.path = script_path() + "/deployments";
  request.deadline = context.deadline;
  auto answer = api_->call("listing the deployments of Worker " + target_.script, request);
  if (!answer) return answer.error();
  const auto& result = answer.value().result;
  const auto list = result.is_object() ? result.find("deployments") : result.end();
  if (list == result.end() || !list->is_array()) {
    return unavailable("listing the deployments of Worker " + target_.script +
                       ": Cloudflare's result has no deployments list");
  }
  return std::vector<nlohmann::json>(list->begin(), list->end());
}

Result<nlohmann::json> WorkersDeployTarget::live_deployment(const DeployContext& context) {
  auto list = deployments(context);
  if (!list) return list.error();
  if (list.value().empty()) return nlohmann::json{};
  return list.value().front();
}

Result<std::string> WorkersDeployTarget::find_uploaded(const DeployContext& context) {
  auto versions = api_->list("listing the versions of Worker " + target_.script,
                             script_path() + "/versions", "items", context.deadline,
                             kVersionsLooked, /*max_pages=*/1);
  if (!versions) return versions.error();
  const std::string marker = deploy_marker(context) + ":";
  for (const auto& v : versions.value()) {
    if (annotation(v, "workers/message").rfind(marker, 0) == 0) return string_field(v, "id");
  }
  return std::string{};
}

Result<std::string> WorkersDeployTarget::upload(const DeployContext& context, const LogSink& log) {
  auto modules = module_parts(target_.dir);
  if (!modules) return modules.error();
  const bool has_main = std::any_of(modules.value().begin(), modules.value().end(),
                                    [&](const FormPart& p) { return p.name == target_.main_module; });
  if (!has_main) {
    return permanent(invalid_argument("the Worker's dir " + target_.dir + " has no " +
                                      target_.main_module + " (main_module)"));
  }
  std::vector<FormPart> parts;
  parts.push_back({"metadata", "", "application/json",
                   version_metadata(target_, context).dump()});
  for (auto& part : modules.value()) parts.push_back(std::move(part));
  const std::string boundary = choose_boundary(parts);
  RestClient::Request request;
  request.method = "POST";
  request.path = script_path() + "/versions";
  request.body = multipart_body(parts, boundary);
  request.content_type = multipart_content_type(boundary);
  request.deadline = context.deadline;
  request.idempotent = false;
  auto answer = api_->call("uploading a version of Worker " + target_.script, request);
  if (!answer) return answer.error();
  const std::string id = string_field(answer.value().result, "id");
  if (id.empty() || !std::all_of(id.begin(), id.end(), id_char)) {
    return unavailable("uploading a version of Worker " + target_.script +
                       ": Cloudflare's result has no version id");
  }
  if (log) {
    log(fmt::format("uploaded version {} of Worker {} ({} modules)", id, target_.script,
                    parts.size() - 1));
  }
  return id;
}

Result<Envelope> WorkersDeployTarget::deploy(const DeployContext& context,
                                             const std::string& version, int percent,
                                             const std::string& previous,
                                             const std::string& message, bool force) {
  nlohmann::json versions = nlohmann::json::array();
  versions.push_back({{"version_id", version}, {"percentage", percent}});
  if (percent < 100) versions.push_back({{"version_id", previous}, {"percentage", 100 - percent}});
  const nlohmann::json body = {
      {"strategy", "percentage"},
      {"versions", versions},
      {"annotations", {{"workers/message", cut(message, kMaxMessageBytes)}}}};
  RestClient::Request request;
  request.method = "POST";
  request.path = script_path() + "/deployments" + (force ? "?force=true" : "");
  request.body = body.dump();
  request.deadline = context.deadline;
  return api_->exchange("deploying version " + version + " of Worker " + target_.script, request);
}

Result<DeployProgress> WorkersDeployTarget::put_out(const DeployContext& context,
                                                    WorkerHandle handle, std::size_t index,
                                                    const LogSink& log) {
  index = std::min(index, target_.steps.size() - 1);
  // Nothing served before: there is nothing to split traffic with, all of it goes to the new one.
  const int percent = handle.previous.empty() ? 100 : target_.steps[index];
  const std::string what = "deploying version " + handle.version + " of Worker " + target_.script;
  auto answer = deploy(context, handle.version, percent, handle.previous,
                       deploy_marker(context) + ": step " + std::to_string(index + 1) + " of " +
                           std::to_string(target_.steps.size()),
                       /*force=*/false);
  if (!answer) return answer.error();
  if (!answer.value().success || answer.value().status / 100 != 2) {
    return envelope_error(what, answer.value());
  }
  handle.phase = static_cast<int>(index) + 1;
  DeployProgress progress{DeployStatus::running, handle.text()};
  if (percent == 100) {
    progress.status = DeployStatus::succeeded;
    progress.detail = "version " + handle.version + " at 100%";
  } else {
    progress.status = DeployStatus::phase_done;
    progress.phase = handle.phase;
    progress.detail = fmt::format("version {} at {}% of traffic, {} at {}%", handle.version,
                                  percent, handle.previous, 100 - percent);
  }
  if (log) {
    log(handle.previous.empty() && target_.steps[index] < 100
            ? "Worker " + target_.script + " served nothing before: " + progress.detail
            : progress.detail);
  }
  return progress;
}

Result<DeployProgress> WorkersDeployTarget::start(const DeployContext& context,
                                                  const LogSink& log) {
  // A start tried again (its answer lost, orgd restarted) finds its upload instead of making
  // another.
  auto uploaded = find_uploaded(context);
  if (!uploaded) return uploaded.error();
  auto live = live_deployment(context);
  if (!live) return live.error();
  WorkerHandle handle;
  handle.version = uploaded.value();
  if (!handle.version.empty() && share_of(live.value(), handle.version)) {
    return progress_of(context, handle, live.value());
  }
  handle.previous = main_version(live.value());
  if (handle.version.empty()) {
    auto made = upload(context, log);
    if (!made) return made.error();
    handle.version = made.value();
  } else if (log) {
    log("version " + handle.version + " was uploaded for this attempt already; deploying it");
  }
  return put_out(context, handle, 0, log);
}

Result<DeployProgress> WorkersDeployTarget::progress_of(const DeployContext& context,
                                                        const WorkerHandle& handle,
                                                        const nlohmann::json& live) {
  (void)context;
  const auto share = share_of(live, handle.version);
  DeployProgress progress{DeployStatus::running, handle.text()};
  if (!share) {
    progress.status = DeployStatus::failed;
    progress.error = "version " + handle.version + " of Worker " + target_.script +
                     " is not deployed (deployment " + string_field(live, "id") +
                     " serves " + main_version(live) + ")";
    return progress;
  }
  if (*share >= 100) {
    progress.status = DeployStatus::succeeded;
    progress.detail = "version " + handle.version + " at 100%";
    return progress;
  }
  // The phase out is the step whose percentage the deployment shows.
  WorkerHandle now = handle;
  for (std::size_t i = 0; i < target_.steps.size(); ++i) {
    if (std::fabs(target_.steps[i] - *share) < 0.5) now.phase = static_cast<int>(i) + 1;
  }
  progress.handle = now.text();
  progress.status = DeployStatus::phase_done;
  progress.phase = now.phase;
  progress.detail = "version " + handle.version + " at " + percent_text(*share) + "% of traffic";
  return progress;
}

Result<DeployProgress> WorkersDeployTarget::poll(const DeployContext& context) {
  const auto handle = parse_worker_handle(context.handle);
  if (!handle) {
    return permanent(invalid_argument("cloudflare: not a Worker deploy handle: " + context.handle));
  }
  auto live = live_deployment(context);
  if (!live) return live.error();
  return progress_of(context, *handle, live.value());
}

Result<DeployProgress> WorkersDeployTarget::advance(const DeployContext& context) {
  const auto handle = parse_worker_handle(context.handle);
  if (!handle) {
    return permanent(invalid_argument("cloudflare: not a Worker deploy handle: " + context.handle));
  }
  const std::size_t next = static_cast<std::size_t>(std::max(context.phases_passed, 0));
  return put_out(context, *handle, next, {});
}

Result<DeployProgress> WorkersDeployTarget::recover(const DeployContext& context) {
  auto uploaded = find_uploaded(context);
  if (!uploaded) return uploaded.error();
  if (uploaded.value().empty()) {
    return not_found("cloudflare: no version of Worker " + target_.script + " names " +
                     deploy_marker(context));
  }
  auto live = live_deployment(context);
  if (!live) return live.error();
  WorkerHandle handle;
  handle.version = uploaded.value();
  if (share_of(live.value(), handle.version)) return progress_of(context, handle, live.value());
  // Uploaded, never deployed: orgd stopped between the two calls.
  handle.previous = main_version(live.value());
  return put_out(context, handle, 0, {});
}

Result<DeployProgress> WorkersDeployTarget::rollback(const DeployContext& context,
                                                     const LogSink& log) {
  const auto mine = parse_worker_handle(context.handle);
  std::string target;
  if (mine && !mine->previous.empty()) {
    target = mine->previous;
  } else if (context.previous) {
    if (const auto before = parse_worker_handle(context.previous->handle)) target = before->version;
  }
  if (target.empty() && mine) {
    // The latest deployment that does not hold this deploy's version served before it.
    auto list = deployments(context);
    if (!list) return list.error();
    for (const auto& d : list.value()) {
      if (!share_of(d, mine->version)) {
        target = main_version(d);
        break;
      }
    }
  }
  if (target.empty()) {
    return permanent(invalid_argument("cloudflare: no earlier version of Worker " +
                                      target_.script + " is known to roll back to"));
  }
  const std::string message = "orgd rollback of deploy " + context.deploy_id;
  const std::string what = "rolling Worker " + target_.script + " back to version " + target;
  auto answer = deploy(context, target, 100, {}, message, /*force=*/false);
  if (!answer) return answer.error();
  if (!answer.value().success && answer.value().has_error(kSecretsChangedCode)) {
    if (log) {
      log("Cloudflare refused the rollback to version " + target +
          " because the Worker's secrets changed since (10220); deploying it with force=true "
          "(the current secrets stay)");
    }
    answer = deploy(context, target, 100, {}, message, /*force=*/true);
    if (!answer) return answer.error();
  }
  if (!answer.value().success || answer.value().status / 100 != 2) {
    return envelope_error(what, answer.value());
  }
  if (log) log("rolled Worker " + target_.script + " back to version " + target + " at 100%");
  WorkerHandle back;
  back.version = target;
  DeployProgress progress{DeployStatus::succeeded, back.text()};
  progress.detail = "version " + target + " at 100%";
  return progress;
}

}  // namespace orgd::cloudflare
