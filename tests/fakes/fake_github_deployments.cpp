// Deployments and deployment statuses (cloud-apis.md §1.2).

#include <algorithm>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing::github_fake {

namespace {

using State = FakeGithub::State;

constexpr std::size_t kMaxDescription = 140;
const char* const kStates[] = {"error",   "failure", "inactive", "in_progress",
                               "queued", "pending", "success"};

std::string repo_key(const Ctx& ctx) { return lower(ctx.param("owner")) + "/" + lower(ctx.param("repo")); }

bool same_repo(const FakeDeployment& d, const Ctx& ctx) {
  return lower(d.owner) + "/" + lower(d.repo) == repo_key(ctx);
}

json creator() { return json{{"login", "orgd-bot"}, {"id", 1}, {"type", "User"}}; }

json deployment_json(const FakeDeployment& d, const Ctx& ctx) {
  const std::string repo_url = ctx.base_url + "/repos/" + d.owner + "/" + d.repo;
  const std::string url = repo_url + "/deployments/" + std::to_string(d.id);
  return json{{"url", url},
              {"id", d.id},
              {"node_id", "DE_kwDO" + std::to_string(d.id)},
              {"sha", d.sha},
              {"ref", d.ref},
              {"task", d.task},
              {"payload", d.payload},
              {"original_environment", d.environment},
              {"environment", d.environment},
              {"description", d.description.empty() ? json(nullptr) : json(d.description)},
              {"creator", creator()},
              {"created_at", d.created_at},
              {"updated_at", d.statuses.empty() ? d.created_at : d.statuses.back().created_at},
              {"statuses_url", url + "/statuses"},
              {"repository_url", repo_url},
              {"transient_environment", d.transient_environment},
              {"production_environment", d.production_environment},
              {"performed_via_github_app", nullptr}};
}

json status_json(const FakeDeployment& d, const FakeDeploymentStatus& s, const Ctx& ctx) {
  const std::string repo_url = ctx.base_url + "/repos/" + d.owner + "/" + d.repo;
  const std::string url = repo_url + "/deployments/" + std::to_string(d.id);
  return json{{"url", url + "/statuses/" + std::to_string(s.id)},
              {"id", s.id},
              {"node_id", "DES_kwDO" + std::to_string(s.id)},
              {"state", s.state},
              {"creator", creator()},
              {"description", s.description},
              {"environment", s.environment},
              {"target_url", s.target_url},
              {"log_url", s.log_url},
              {"environment_url", s.environment_url},
              {"created_at", s.created_at},
              {"updated_at", s.created_at},
              {"deployment_url", url},
              {"repository_url", repo_url},
              {"performed_via_github_app", nullptr}};
}

// A short commit id for a ref, the same every time, as a real ref resolves to one commit.
std::string sha_of(const std::string& ref) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  std::size_t h = std::hash<std::string>{}(ref);
  for (int i = 0; i < 40; ++i) {
    out.push_back(hex[(h >> ((i % 16) * 4)) & 0xF]);
    if (i % 16 == 15) h = std::hash<std::string>{}(ref + out);
  }
  return out;
}

Reply create_deployment(State& st, Ctx& ctx) {
  json body = ctx.body();
  if (!body.is_object()) return invalid_request("Request body must be a JSON object.");
  if (!body.contains("ref")) return invalid_request("\"ref\" wasn't supplied.");
  if (!body["ref"].is_string()) {
    return invalid_request("For 'ref', " + body["ref"].dump() + " is not a string.");
  }
  FakeDeployment d;
  d.owner = ctx.param("owner");
  d.repo = ctx.param("repo");
  d.ref = body["ref"].get<std::string>();
  d.sha = sha_of(d.ref);
  d.task = body.value("task", "deploy");
  d.auto_merge = body.value("auto_merge", true);
  if (body.contains("required_contexts")) {
    const json& rc = body["required_contexts"];
    if (!rc.is_array() ||
        !std::all_of(rc.begin(), rc.end(), [](const json& v) { return v.is_string(); })) {
      return invalid_request("For 'required_contexts', " + rc.dump() +
                             " is not an array of strings.");
    }
    d.required_contexts = rc.get<std::vector<std::string>>();
  }
  if (body.contains("payload")) {
    const json& p = body["payload"];
    if (p.is_string()) {
      json parsed = json::parse(p.get<std::string>(), nullptr, false);
      d.payload = parsed.is_discarded() ? p : parsed;
    } else if (p.is_object()) {
      d.payload = p;
    } else {
      return invalid_request("For 'payload', " + p.dump() + " is not an object or a string.");
    }
  }
  d.environment = body.value("environment", "production");
  if (body.contains("description") && body["description"].is_string()) {
    d.description = body["description"].get<std::string>();
  }
  d.transient_environment = body.value("transient_environment", false);
  d.production_environment = body.value("production_environment", d.environment == "production");

  // Pending commit statuses block a deployment that requires them (all when left out).
  auto pending = st.pending_contexts.find(repo_key(ctx));
  if (pending != st.pending_contexts.end()) {
    json blocking = json::array();
    for (const auto& c : pending->second) {
      const bool required =
          !d.required_contexts || std::find(d.required_contexts->begin(),
                                            d.required_contexts->end(), c) != d.required_contexts->end();
      if (required) blocking.push_back(json{{"context", c}, {"state", "pending"}});
    }
    if (!blocking.empty()) {
      Reply r = error(409, "Conflict: Commit status checks failed for " + d.ref + ".");
      r.body["errors"] = json::array({json{{"contexts", blocking},
                                           {"resource", "Deployment"},
                                           {"field", "required_contexts"},
                                           {"code", "invalid"}}});
      return r;
    }
  }

  d.id = st.next_deployment_id++;
  d.created_at = iso8601(ctx.now);
  st.deployments[d.id] = d;
  return created(deployment_json(d, ctx));
}

std::vector<FakeDeployment*> repo_deployments(State& st, const Ctx& ctx) {
  std::vector<FakeDeployment*> out;
  for (auto& [id, d] : st.deployments) {
    if (same_repo(d, ctx)) out.push_back(&d);
  }
  std::sort(out.begin(), out.end(),
            [](const FakeDeployment* a, const FakeDeployment* b) { return a->id > b->id; });
  return out;
}

Reply list_deployments(State& st, Ctx& ctx) {
  std::vector<json> items;
  for (auto* d : repo_deployments(st, ctx)) {
    auto keep = [&](const char* key, const std::string& value) {
      const std::string want = ctx.query_value(key);
      return want.empty() || want == value;
    };
    if (keep("sha", d->sha) && keep("ref", d->ref) && keep("task", d->task) &&
        keep("environment", d->environment)) {
      items.push_back(deployment_json(*d, ctx));
    }
  }
  return paginate(ctx, items);
}

FakeDeployment* find_deployment(State& st, const Ctx& ctx) {
  const std::string& text = ctx.param("deployment_id");
  if (text.empty() || text.size() > 18 || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    return nullptr;
  }
  auto it = st.deployments.find(std::stoll(text));
  if (it == st.deployments.end() || !same_repo(it->second, ctx)) return nullptr;
  return &it->second;
}

Reply get_deployment(State& st, Ctx& ctx) {
  FakeDeployment* d = find_deployment(st, ctx);
  if (d == nullptr) return not_found();
  return Reply{200, deployment_json(*d, ctx), false, {}};
}

Reply delete_deployment(State& st, Ctx& ctx) {
  FakeDeployment* d = find_deployment(st, ctx);
  if (d == nullptr) return not_found();
  const bool inactive = !d->statuses.empty() && d->statuses.back().state == "inactive";
  if (!inactive && repo_deployments(st, ctx).size() > 1) {
    return validation_failed("Deployment", "", "custom",
                             "We cannot delete an active deployment unless it is the only "
                             "deployment in a given environment.");
  }
  st.deployments.erase(d->id);
  return no_content();
}

FakeDeploymentStatus add_status(State& st, FakeDeployment& d, std::string state, TimePoint now) {
  FakeDeploymentStatus s;
  s.id = st.next_status_id++;
  s.state = std::move(state);
  s.environment = d.environment;
  s.created_at = iso8601(now);
  d.statuses.push_back(s);
  return s;
}

Reply create_status(State& st, Ctx& ctx) {
  FakeDeployment* d = find_deployment(st, ctx);
  if (d == nullptr) return not_found();
  json body = ctx.body();
  if (!body.is_object()) return invalid_request("Request body must be a JSON object.");
  if (!body.contains("state")) return invalid_request("\"state\" wasn't supplied.");
  const std::string state = body["state"].is_string() ? body["state"].get<std::string>() : "";
  if (std::find(std::begin(kStates), std::end(kStates), state) == std::end(kStates)) {
    return invalid_request("For 'state', " + body["state"].dump() +
                           " is not a member of [\"error\", \"failure\", \"inactive\", "
                           "\"in_progress\", \"queued\", \"pending\", \"success\"].");
  }
  auto text = [&](const char* key) {
    return body.contains(key) && body[key].is_string() ? body[key].get<std::string>() : "";
  };
  const std::string description = text("description");
  if (description.size() > kMaxDescription) {
    return validation_failed("DeploymentStatus", "description", "custom",
                             "description is too long (maximum is 140 characters)");
  }
  if (!text("environment").empty()) d->environment = text("environment");
  FakeDeploymentStatus s;
  s.id = st.next_status_id++;
  s.state = state;
  s.description = description;
  s.environment = d->environment;
  // Setting log_url sets target_url too (the legacy name).
  s.log_url = !text("log_url").empty() ? text("log_url") : text("target_url");
  s.target_url = s.log_url;
  s.environment_url = text("environment_url");
  s.created_at = iso8601(ctx.now);
  d->statuses.push_back(s);

  // auto_inactive: earlier successful non-transient, non-production deployments of the same
  // environment get an inactive status.
  if (state == "success" && body.value("auto_inactive", true)) {
    for (auto* other : repo_deployments(st, ctx)) {
      if (other->id == d->id || other->environment != d->environment ||
          other->transient_environment || other->production_environment ||
          other->statuses.empty() || other->statuses.back().state != "success") {
        continue;
      }
      add_status(st, *other, "inactive", ctx.now);
    }
  }
  return created(status_json(*d, s, ctx));
}

Reply list_statuses(State& st, Ctx& ctx) {
  FakeDeployment* d = find_deployment(st, ctx);
  if (d == nullptr) return not_found();
  std::vector<json> items;
  for (auto it = d->statuses.rbegin(); it != d->statuses.rend(); ++it) {
    items.push_back(status_json(*d, *it, ctx));
  }
  return paginate(ctx, items);
}

}  // namespace

void add_deployment_routes(std::vector<Route>& routes) {
  const std::string base = "/repos/{owner}/{repo}/deployments";
  routes.push_back({"POST", base, create_deployment});
  routes.push_back({"GET", base, list_deployments});
  routes.push_back({"GET", base + "/{deployment_id}", get_deployment});
  routes.push_back({"DELETE", base + "/{deployment_id}", delete_deployment});
  routes.push_back({"POST", base + "/{deployment_id}/statuses", create_status});
  routes.push_back({"GET", base + "/{deployment_id}/statuses", list_statuses});
}

}  // namespace orgd::testing::github_fake
