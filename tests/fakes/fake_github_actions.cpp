// Workflow dispatches and runs (cloud-apis.md §1.1).

#include <algorithm>
#include <regex>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing::github_fake {

namespace {

using State = FakeGithub::State;

constexpr std::size_t kMaxInputs = 25;

std::string workflow_name(const std::string& workflow) {
  auto dot = workflow.rfind('.');
  return dot == std::string::npos ? workflow : workflow.substr(0, dot);
}

// The workflow's `run-name:` with ${{ inputs.x }} (and ${{ github.ref_name }}) filled in.
std::string render_run_name(const std::string& tmpl, const json& inputs, const std::string& ref) {
  static const std::regex expr(R"(\$\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\})");
  std::string out;
  auto begin = std::sregex_iterator(tmpl.begin(), tmpl.end(), expr);
  std::size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    out += tmpl.substr(last, static_cast<std::size_t>(it->position()) - last);
    const std::string name = (*it)[1];
    if (name.rfind("inputs.", 0) == 0) {
      const std::string key = name.substr(7);
      if (inputs.is_object() && inputs.contains(key)) {
        const json& v = inputs[key];
        out += v.is_string() ? v.get<std::string>() : v.dump();
      }
    } else if (name == "github.ref_name") {
      out += ref;
    }
    last = static_cast<std::size_t>(it->position() + it->length());
  }
  return out + tmpl.substr(last);
}

bool same_repo(const FakeRun& run, const Ctx& ctx) {
  return lower(run.owner) == lower(ctx.param("owner")) &&
         lower(run.repo) == lower(ctx.param("repo"));
}

std::int64_t workflow_number(const std::string& workflow) {
  return 60000000 + static_cast<std::int64_t>(std::hash<std::string>{}(workflow) % 9000000);
}

bool matches_workflow(const FakeRun& run, const std::string& id) {
  return run.workflow == id || std::to_string(workflow_number(run.workflow)) == id;
}

// A run is read: it moves from queued to in_progress, and completes after the configured
// number of reads.
void poll(State& st, FakeRun& run, TimePoint now) {
  ++run.polls;
  if (run.status == "completed") return;
  if (st.complete_after_polls > 0 && run.polls >= st.complete_after_polls) {
    run.status = "completed";
    run.conclusion = st.auto_conclusion;
    run.updated_at = iso8601(now);
  } else if (run.status == "queued") {
    run.status = "in_progress";
    run.updated_at = iso8601(now);
  }
}

}  // namespace

json run_json(const FakeRun& run, const std::string& base_url) {
  const std::string repo_path = "/repos/" + run.owner + "/" + run.repo;
  const std::string id = std::to_string(run.id);
  return json{
      {"id", run.id},
      {"name", run.name},
      {"node_id", "WFR_kwLO" + id},
      {"head_branch", run.ref},
      {"head_sha", "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
      {"path", ".github/workflows/" + run.workflow},
      {"display_title", run.display_title},
      {"run_number", run.id % 100000},
      {"run_attempt", 1},
      {"event", run.event},
      {"status", run.status},
      {"conclusion", run.conclusion.empty() ? json(nullptr) : json(run.conclusion)},
      {"workflow_id", workflow_number(run.workflow)},
      {"url", base_url + repo_path + "/actions/runs/" + id},
      {"html_url", "https://github.com/" + run.owner + "/" + run.repo + "/actions/runs/" + id},
      {"created_at", run.created_at},
      {"updated_at", run.updated_at},
      {"run_started_at", run.created_at},
      {"cancel_url", base_url + repo_path + "/actions/runs/" + id + "/cancel"},
      {"repository", {{"name", run.repo}, {"full_name", run.owner + "/" + run.repo}}},
  };
}

namespace {

Reply dispatch(State& st, Ctx& ctx) {
  json body = ctx.body();
  if (!body.is_object()) return invalid_request("Request body must be a JSON object.");
  if (!body.contains("ref")) return invalid_request("\"ref\" wasn't supplied.");
  if (!body["ref"].is_string()) {
    return invalid_request("For 'ref', " + body["ref"].dump() + " is not a string.");
  }
  json inputs = body.value("inputs", json::object());
  if (!inputs.is_object()) {
    return invalid_request("For 'inputs', " + inputs.dump() + " is not an object.");
  }
  if (inputs.size() > kMaxInputs) {
    return invalid_request("For 'inputs', " + std::to_string(inputs.size()) +
                           " properties were given; the maximum number of properties is 25.");
  }
  const std::string repo_key = lower(ctx.param("owner")) + "/" + lower(ctx.param("repo"));
  if (auto known = st.workflows.find(repo_key);
      known != st.workflows.end() && known->second.count(ctx.param("workflow_id")) == 0) {
    return not_found();
  }
  if (auto known = st.refs.find(repo_key);
      known != st.refs.end() && known->second.count(body["ref"].get<std::string>()) == 0) {
    return error(422, "No ref found for: " + body["ref"].get<std::string>());
  }
  bool details = false;
  if (body.contains("return_run_details")) {
    if (!st.return_run_details_supported) {
      return invalid_request("\"return_run_details\" is not a permitted key.");
    }
    if (!body["return_run_details"].is_boolean()) {
      return invalid_request("For 'return_run_details', " + body["return_run_details"].dump() +
                             " is not a boolean.");
    }
    details = body["return_run_details"].get<bool>();
  }
  // 2026-03-10 answers with the run by default (cloud-apis.md §1.1, strongly indicated).
  if (ctx.api_version == "2026-03-10" && st.return_run_details_supported) details = true;

  FakeRun run;
  run.id = st.next_run_id++;
  run.owner = ctx.param("owner");
  run.repo = ctx.param("repo");
  run.workflow = ctx.param("workflow_id");
  run.ref = body["ref"].get<std::string>();
  run.inputs = inputs;
  run.event = "workflow_dispatch";
  run.name = workflow_name(run.workflow);
  auto tmpl = st.run_names.find(run.workflow);
  run.display_title =
      tmpl == st.run_names.end() ? run.name : render_run_name(tmpl->second, inputs, run.ref);
  run.created = ctx.now;
  run.created_at = run.updated_at = iso8601(ctx.now);
  const auto id = run.id;
  st.runs[id] = run;
  if (st.hide_new_runs_for > 0) st.hidden_runs[id] = st.hide_new_runs_for;
  if (!details) return no_content();
  const std::string sid = std::to_string(id);
  return Reply{200,
               json{{"workflow_run_id", id},
                    {"run_url", ctx.base_url + "/repos/" + run.owner + "/" + run.repo +
                                    "/actions/runs/" + sid},
                    {"html_url", "https://github.com/" + run.owner + "/" + run.repo +
                                     "/actions/runs/" + sid}},
               false,
               {}};
}

// `created` as GitHub's search syntax has it: >=T, >T, <=T, <T, A..B, or a date (that day).
std::optional<std::function<bool(TimePoint)>> created_filter(const std::string& text) {
  auto parse = [](const std::string& s) { return parse_iso8601(s); };
  auto starts = [&](const char* p) { return text.rfind(p, 0) == 0; };
  if (starts(">=") || starts("<=")) {
    auto t = parse(text.substr(2));
    if (!t) return std::nullopt;
    if (text[0] == '>') return [t = *t](TimePoint c) { return c >= t; };
    return [t = *t](TimePoint c) { return c <= t; };
  }
  if (starts(">") || starts("<")) {
    auto t = parse(text.substr(1));
    if (!t) return std::nullopt;
    if (text[0] == '>') return [t = *t](TimePoint c) { return c > t; };
    return [t = *t](TimePoint c) { return c < t; };
  }
  if (auto dots = text.find(".."); dots != std::string::npos) {
    auto a = parse(text.substr(0, dots)), b = parse(text.substr(dots + 2));
    if (!a || !b) return std::nullopt;
    return [a = *a, b = *b](TimePoint c) { return c >= a && c <= b; };
  }
  auto t = parse(text);
  if (!t) return std::nullopt;
  if (text.size() == 10) {
    return [t = *t](TimePoint c) { return c >= t && c < t + std::chrono::hours(24); };
  }
  return [t = *t](TimePoint c) {
    return std::chrono::time_point_cast<std::chrono::seconds>(c) == t;
  };
}

Reply list_runs(State& st, Ctx& ctx, const std::string* workflow) {
  const std::string event = ctx.query_value("event");
  const std::string status = ctx.query_value("status");
  const std::string branch = ctx.query_value("branch");
  const std::string created = ctx.query_value("created");
  std::function<bool(TimePoint)> in_range = [](TimePoint) { return true; };
  if (!created.empty()) {
    auto f = created_filter(created);
    if (!f) return validation_failed("WorkflowRun", "created", "invalid");
    in_range = *f;
  }
  std::vector<FakeRun*> found;
  for (auto& [id, run] : st.runs) {
    if (!same_repo(run, ctx)) continue;
    if (auto hidden = st.hidden_runs.find(id); hidden != st.hidden_runs.end()) {
      if (--hidden->second <= 0) st.hidden_runs.erase(hidden);
      continue;
    }
    if (workflow != nullptr && !matches_workflow(run, *workflow)) continue;
    if (!event.empty() && run.event != event) continue;
    if (!branch.empty() && run.ref != branch) continue;
    if (!status.empty() && run.status != status && run.conclusion != status) continue;
    if (!in_range(run.created)) continue;
    found.push_back(&run);
  }
  std::sort(found.begin(), found.end(), [](const FakeRun* a, const FakeRun* b) {
    return a->created != b->created ? a->created > b->created : a->id > b->id;
  });
  // Only the runs on the page asked for count as read.
  std::vector<json> ids;
  for (auto* run : found) ids.push_back(run->id);
  Reply page = paginate(ctx, ids, [](json p, std::size_t) { return p; });
  json runs = json::array();
  for (const auto& id : page.body) {
    FakeRun& run = st.runs.at(id.get<std::int64_t>());
    poll(st, run, ctx.now);
    runs.push_back(run_json(run, ctx.base_url));
  }
  page.body = json{{"total_count", found.size()}, {"workflow_runs", std::move(runs)}};
  return page;
}

FakeRun* find_run(State& st, const Ctx& ctx) {
  const std::string& text = ctx.param("run_id");
  if (text.empty() || text.size() > 18 || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    return nullptr;
  }
  auto it = st.runs.find(std::stoll(text));
  if (it == st.runs.end() || !same_repo(it->second, ctx)) return nullptr;
  return &it->second;
}

Reply get_run(State& st, Ctx& ctx) {
  FakeRun* run = find_run(st, ctx);
  if (run == nullptr) return not_found();
  poll(st, *run, ctx.now);
  return Reply{200, run_json(*run, ctx.base_url), false, {}};
}

Reply cancel_run(State& st, Ctx& ctx) {
  FakeRun* run = find_run(st, ctx);
  if (run == nullptr) return not_found();
  if (run->status == "completed") {
    return error(409, "Cannot cancel a workflow run that is completed.");
  }
  run->status = "completed";
  run->conclusion = "cancelled";
  run->updated_at = iso8601(ctx.now);
  return Reply{202, json::object(), false, {}};
}

}  // namespace

void add_actions_routes(std::vector<Route>& routes) {
  const std::string repo = "/repos/{owner}/{repo}/actions";
  routes.push_back({"POST", repo + "/workflows/{workflow_id}/dispatches", dispatch});
  routes.push_back({"GET", repo + "/runs",
                    [](State& st, Ctx& ctx) { return list_runs(st, ctx, nullptr); }});
  routes.push_back({"GET", repo + "/workflows/{workflow_id}/runs", [](State& st, Ctx& ctx) {
                      return list_runs(st, ctx, &ctx.param("workflow_id"));
                    }});
  routes.push_back({"GET", repo + "/runs/{run_id}", get_run});
  routes.push_back({"POST", repo + "/runs/{run_id}/cancel", cancel_run});
}

}  // namespace orgd::testing::github_fake
