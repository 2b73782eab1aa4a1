#include "tests/fakes/fake_cloudflare.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <mutex>
#include <set>

namespace orgd::testing {

namespace {

using json = nlohmann::json;
using TimePoint = std::chrono::system_clock::time_point;

// Cloudflare's codes where they are known (cloud-apis.md §2); the others are the fake's own
// guesses (docs/testing-fakes.md).
constexpr int kAuthError = 10000;
constexpr int kRouteError = 7003;         // "Could not route to …"
constexpr int kWorkerNotFound = 10007;    // workers.api.error.script_not_found
constexpr int kBadRequest = 10021;        // guess: a malformed upload or deployment
constexpr int kSecretsChanged = 10220;    // wrangler's CANNOT_ROLLBACK_WITH_MODIFIED_SECERT_CODE
constexpr int kNotDeployed = 10215;       // guess: the secret edit refusal has no known code
constexpr int kSecretNotFound = 10056;    // guess
constexpr int kRateLimited = 971;         // "Please wait and consider throttling your request speed"
constexpr int kInjected = 10013;          // guess: an internal failure reported with HTTP 200
constexpr int kBucketExists = 10004;      // "The bucket you tried to create already exists…"
constexpr int kBucketNameInvalid = 10005;  // guess

const std::set<std::string> kModuleTypes = {
    "application/javascript+module", "text/javascript+module", "application/javascript",
    "text/javascript", "text/x-python", "text/x-python-requirement", "application/wasm",
    "text/plain", "application/octet-stream", "application/source-map"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < path.size()) {
    const auto slash = path.find('/', at);
    const auto end = slash == std::string::npos ? path.size() : slash;
    if (end > at) out.push_back(path.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

std::string url_decode(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(text[i] == '+' ? ' ' : text[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(const std::string& query) {
  std::map<std::string, std::string> out;
  std::size_t at = 0;
  while (at < query.size()) {
    const auto amp = query.find('&', at);
    const std::string part = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    const auto eq = part.find('=');
    out[url_decode(part.substr(0, eq))] = eq == std::string::npos ? "" : url_decode(part.substr(eq + 1));
    if (amp == std::string::npos) break;
    at = amp + 1;
  }
  return out;
}

json error_list(int code, const std::string& message) {
  return json::array({{{"code", code}, {"message", message}}});
}

std::string param_of(const std::string& header, const std::string& name) {
  const std::string low = lower(header);
  const auto at = low.find(name + "=");
  if (at == std::string::npos) return {};
  std::string value = header.substr(at + name.size() + 1);
  if (!value.empty() && value.front() == '"') {
    const auto close = value.find('"', 1);
    return value.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  }
  return value.substr(0, value.find(';'));
}

struct Reply {
  int status = 200;
  json body;
  std::vector<orgd::HttpHeader> headers;
};

Reply ok(json result, int status = 200) {
  return {status, {{"success", true}, {"errors", json::array()}, {"messages", json::array()},
                   {"result", std::move(result)}},
          {}};
}

Reply failure(int status, int code, const std::string& message) {
  return {status, {{"success", false}, {"errors", error_list(code, message)},
                   {"messages", json::array()}, {"result", nullptr}},
          {}};
}

// The route a request is for, named as CfCall::route names it ("" when none).
std::string route_of(const std::string& method, const std::vector<std::string>& seg) {
  if (seg.size() == 3 && seg[0] == "user" && seg[1] == "tokens" && seg[2] == "verify") {
    return method + " /user/tokens/verify";
  }
  if (seg.size() < 4 || seg[0] != "accounts") return {};
  if (seg.size() == 4 && seg[2] == "tokens" && seg[3] == "verify") {
    return method + " /accounts/{account_id}/tokens/verify";
  }
  if (seg[2] == "workers" && seg.size() >= 6 && seg.size() <= 7 && seg[3] == "scripts") {
    std::string r = method + " /accounts/{account_id}/workers/scripts/{script_name}/" + seg[5];
    if (seg.size() == 7) {
      r += seg[5] == "secrets" ? "/{secret_name}" : seg[5] == "versions" ? "/{version_id}" : "/{deployment_id}";
    }
    return r;
  }
  if (seg[2] == "r2" && seg.size() == 4 && seg[3] == "buckets") {
    return method + " /accounts/{account_id}/r2/buckets";
  }
  if (seg[2] == "containers" && seg.size() >= 5 && seg[3] == "applications") {
    const std::string base = method + " /accounts/{account_id}/containers/applications/{application_id}";
    if (seg.size() == 5) return base;
    if (seg.size() == 6 && seg[5] == "rollouts") return base + "/rollouts";
    if (seg.size() == 7 && seg[5] == "rollouts") return base + "/rollouts/{rollout_id}";
  }
  return {};
}

}  // namespace

std::optional<std::vector<CfFormPart>> parse_multipart(const std::string& content_type,
                                                       const std::string& body) {
  if (lower(content_type).rfind("multipart/form-data", 0) != 0) return std::nullopt;
  const std::string boundary = param_of(content_type, "boundary");
  if (boundary.empty()) return std::nullopt;
  const std::string delimiter = "--" + boundary;
  std::vector<CfFormPart> parts;
  std::size_t at = body.find(delimiter);
  if (at != 0) return std::nullopt;
  for (;;) {
    at += delimiter.size();
    if (body.compare(at, 2, "--") == 0) return parts;  // the close delimiter
    if (body.compare(at, 2, "\r\n") != 0) return std::nullopt;
    at += 2;
    const auto head_end = body.find("\r\n\r\n", at);
    if (head_end == std::string::npos) return std::nullopt;
    CfFormPart part;
    std::size_t line = at;
    while (line < head_end) {
      auto eol = body.find("\r\n", line);
      if (eol == std::string::npos || eol > head_end) eol = head_end;
      const std::string header = body.substr(line, eol - line);
      const auto colon = header.find(':');
      if (colon != std::string::npos) {
        const std::string name = lower(header.substr(0, colon));
        std::string value = header.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        if (name == "content-disposition") {
          part.name = param_of(value, "name");
          part.filename = param_of(value, "filename");
        } else if (name == "content-type") {
          part.content_type = value;
        }
      }
      line = eol + 2;
    }
    const std::size_t content = head_end + 4;
    const auto next = body.find("\r\n" + delimiter, content);
    if (next == std::string::npos) return std::nullopt;
    part.body = body.substr(content, next - content);
    parts.push_back(std::move(part));
    at = next + 2;
  }
}

std::string CfCall::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (lower(h.name) == lower(std::string(name))) return h.value;
  }
  return "";
}

struct TokenInfo {
  std::string id;
  bool account = false;
  std::string status, expires_on;
};

struct FakeCloudflare::State {
  Options options;
  mutable std::mutex mutex;  // guards everything below
  std::map<std::string, TokenInfo> tokens;
  std::map<std::string, CfWorker> workers;
  std::map<std::string, CfApplication> applications;
  std::vector<CfRollout> rollouts;
  R2BucketCreate r2_create;
  std::set<std::string> r2_buckets;  // when no r2_create
  std::vector<CfCall> calls;
  int next_id = 1;
  bool revert = false;
  bool rollout_get = true;
  int success_false = 0;
  std::string success_false_route;
  // The rate limit: this window's start and use, and a block after a 429.
  TimePoint window_start{};
  int used = 0;
  std::optional<TimePoint> blocked_until;

  TimePoint now() const {
    return options.clock ? options.clock() : std::chrono::system_clock::now();
  }
  std::string new_id(const char* kind) {
    const int n = next_id++;
    return fmt::format("{:08x}-{:04x}-4000-8000-{:012x}", n, static_cast<int>(kind[0]), n * 7919);
  }
  std::string rollout_id() { return fmt::format("rollout{:06d}", next_id++); }

  CfVersion* latest(CfWorker& w) { return w.versions.empty() ? nullptr : &w.versions.back(); }
  CfVersion* version(CfWorker& w, const std::string& id) {
    for (auto& v : w.versions) {
      if (v.id == id) return &v;
    }
    return nullptr;
  }
  // Whether the live deployment serves the latest version to all traffic.
  bool latest_deployed(const CfWorker& w) const {
    if (w.versions.empty() || w.deployments.empty()) return false;
    const auto& live = w.deployments.back();
    return live.versions.size() == 1 && live.versions[0].first == w.versions.back().id &&
           live.versions[0].second >= 100;
  }
  void deploy_at_100(CfWorker& w, const std::string& id, const std::string& message) {
    CfDeployment d;
    d.id = new_id("d");
    d.versions = {{id, 100.0}};
    d.annotations = {{"workers/message", message}, {"workers/triggered_by", "secret"}};
    w.deployments.push_back(std::move(d));
  }
  // A new version like the latest with the secrets changed, deployed at 100% (what the secrets
  // API does).
  void secret_change(CfWorker& w, const std::map<std::string, std::string>& secrets) {
    CfVersion v = *latest(w);
    v.id = new_id("v");
    v.number = static_cast<int>(w.versions.size()) + 1;
    v.secrets = secrets;
    v.source = "secret";
    v.annotations = {{"workers/triggered_by", "secret"}};
    w.versions.push_back(v);
    deploy_at_100(w, v.id, "secret change");
  }

  json version_json(const CfVersion& v) const {
    return {{"id", v.id},
            {"number", v.number},
            {"annotations", v.annotations},
            {"metadata",
             {{"source", v.source}, {"author_email", "deployer@example.com"}, {"hasPreview", false}}}};
  }
  json deployment_json(const CfDeployment& d) const {
    json versions = json::array();
    for (const auto& [id, p] : d.versions) {
      versions.push_back({{"version_id", id}, {"percentage", p}});
    }
    return {{"id", d.id}, {"strategy", "percentage"}, {"versions", versions},
            {"annotations", d.annotations}, {"source", "api"}};
  }
  json application_json(const CfApplication& a) const {
    json out = {{"id", a.id}, {"name", a.name}, {"scheduling_policy", "default"},
                {"instances", 2}, {"configuration", {{"image", a.image}}}};
    if (!a.active_rollout.empty()) out["active_rollout_id"] = a.active_rollout;
    return out;
  }
  json rollout_json(const CfRollout& r) const {
    return {{"id", r.id},
            {"status", r.status},
            {"description", r.description},
            {"strategy", r.strategy},
            {"kind", r.kind},
            {"current_version", 1},
            {"target_version", 2},
            {"progress", {{"total_steps", 1}, {"current_step", r.status == "progressing" ? 0 : 1}}},
            {"health", {{"instances", {{"active", 2}, {"assigned", 2}}}}}};
  }
  // A read of a rollout moves it on; after options.rollout_reads it has ended.
  void read_rollout(CfRollout& r) {
    if (r.status != "progressing") return;
    if (++r.reads < options.rollout_reads) return;
    r.status = revert ? "reverted" : "completed";
    auto& app = applications[r.application];
    if (!revert) app.image = r.image;
    if (app.active_rollout == r.id) app.active_rollout.clear();
  }

  Reply route(const FakeRequest& request, const std::vector<std::string>& seg,
              const std::map<std::string, std::string>& query, std::string& route_name);
  Reply workers_route(const FakeRequest& request, const std::vector<std::string>& seg,
                const std::map<std::string, std::string>& query, std::string& route_name);
  Reply containers_route(const FakeRequest& request, const std::vector<std::string>& seg,
                   std::string& route_name);
  Reply r2_route(const FakeRequest& request, const std::vector<std::string>& seg,
                 std::string& route_name);
  Reply upload(CfWorker& w, const FakeRequest& request);
  Reply create_deployment(CfWorker& w, const FakeRequest& request, bool force);
};

FakeCloudflare::FakeCloudflare(Options options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  state_->window_start = state_->now();
}
FakeCloudflare::FakeCloudflare() : FakeCloudflare(Options{}) {}
FakeCloudflare::~FakeCloudflare() = default;

const std::string& FakeCloudflare::account_id() const { return state_->options.account_id; }

FakeHttpServer::Handler FakeCloudflare::handler() {
  return [this](const FakeRequest& request) { return handle(request); };
}

FakeResponse FakeCloudflare::handle(const FakeRequest& request) {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  std::string path = request.path;
  if (path.rfind("/client/v4", 0) == 0) path = path.substr(10);
  const auto seg = split_path(path);
  const auto query = parse_query(request.query);
  std::string route_name;
  Reply reply;

  // The rate limit comes first: a blocked or over-budget call is not processed.
  const TimePoint now = s.now();
  if (now >= s.window_start + s.options.rate_window) {
    s.window_start = now;
    s.used = 0;
  }
  const bool blocked = s.blocked_until && now < *s.blocked_until;
  if (!blocked && s.used >= s.options.rate_limit) {
    s.blocked_until = now + s.options.rate_block;
  }
  if (s.blocked_until && now < *s.blocked_until) {
    const auto wait = std::chrono::ceil<std::chrono::seconds>(*s.blocked_until - now).count();
    reply = failure(429, kRateLimited,
                    "Rate limited. Please wait and consider throttling your request speed");
    reply.headers.push_back({"Retry-After", std::to_string(std::max<long long>(wait, 1))});
  } else {
    ++s.used;
    const std::string planned = route_of(request.method, seg);
    if (s.success_false > 0 && (s.success_false_route.empty() || s.success_false_route == planned)) {
      // Refused before anything is done: nothing changes.
      --s.success_false;
      route_name = planned;
      reply = failure(200, kInjected, "Internal error: the operation could not be completed");
    } else {
      reply = s.route(request, seg, query, route_name);
    }
  }
  const auto reset = std::chrono::ceil<std::chrono::seconds>(
                         s.window_start + s.options.rate_window - now)
                         .count();
  reply.headers.push_back(
      {"Ratelimit", fmt::format("\"default\";r={};t={}", std::max(0, s.options.rate_limit - s.used),
                                std::max<long long>(reset, 0))});
  reply.headers.push_back({"Ratelimit-Policy", fmt::format("\"burst\";q={};w={}",
                                                           s.options.rate_limit,
                                                           s.options.rate_window.count())});
  reply.headers.push_back({"Content-Type", "application/json"});
  CfCall call{request.method, path, request.query, route_name, request.headers, request.body,
              reply.status};
  s.calls.push_back(std::move(call));
  FakeResponse response;
  response.status = reply.status;
  response.headers = std::move(reply.headers);
  response.body = reply.body.dump();
  return response;
}

Reply FakeCloudflare::State::route(const FakeRequest& request, const std::vector<std::string>& seg,
                                   const std::map<std::string, std::string>& query,
                                   std::string& route_name) {
  const std::string auth = request.header("authorization");
  const auto token = auth.rfind("Bearer ", 0) == 0 ? tokens.find(auth.substr(7)) : tokens.end();
  const bool verify_user = seg.size() == 3 && seg[0] == "user" && seg[1] == "tokens" && seg[2] == "verify";
  const bool verify_account = seg.size() == 4 && seg[0] == "accounts" && seg[2] == "tokens" &&
                              seg[3] == "verify";
  if (verify_user) route_name = "GET /user/tokens/verify";
  if (verify_account) route_name = "GET /accounts/{account_id}/tokens/verify";
  if (token == tokens.end()) return failure(401, kAuthError, "Authentication error");
  const TokenInfo& info = token->second;
  if (verify_user || verify_account) {
    if (request.method != "GET") return failure(405, kRouteError, "Method not allowed");
    if (verify_account && seg[1] != options.account_id) {
      return failure(404, kRouteError, "Could not route to /accounts/" + seg[1] + "/tokens/verify");
    }
    if (info.account != verify_account) return failure(401, 1000, "Invalid API Token");
    json result = {{"id", info.id}, {"status", info.status}};
    if (!info.expires_on.empty()) result["expires_on"] = info.expires_on;
    return ok(result);
  }
  if (info.status != "active") return failure(401, kAuthError, "Authentication error");
  if (seg.size() < 3 || seg[0] != "accounts") {
    return failure(404, kRouteError, "No route for that URI");
  }
  if (seg[1] != options.account_id) {
    return failure(404, kRouteError, "Could not route to /accounts/" + seg[1] +
                                         ", perhaps your object identifier is invalid?");
  }
  if (seg[2] == "workers") return workers_route(request, seg, query, route_name);
  if (seg[2] == "containers") return containers_route(request, seg, route_name);
  if (seg[2] == "r2") return r2_route(request, seg, route_name);
  return failure(404, kRouteError, "No route for that URI");
}

Reply FakeCloudflare::State::r2_route(const FakeRequest& request,
                                      const std::vector<std::string>& seg,
                                      std::string& route_name) {
  if (seg.size() != 4 || seg[3] != "buckets")
    return failure(404, kRouteError, "No route for that URI");
  route_name = request.method + " /accounts/{account_id}/r2/buckets";
  if (request.method != "POST") return failure(405, kRouteError, "Method not allowed");
  const auto body = json::parse(request.body, nullptr, false);
  const std::string name = body.is_object() && body.contains("name") && body["name"].is_string()
                               ? body["name"].get<std::string>()
                               : "";
  bool valid = name.size() >= 3 && name.size() <= 63 && name.front() != '-' && name.back() != '-';
  for (const unsigned char c : name) {
    if (!(std::islower(c) || std::isdigit(c) || c == '-')) valid = false;
  }
  if (!valid) return failure(400, kBucketNameInvalid, "The bucket name is not valid.");
  std::string jurisdiction = request.header("cf-r2-jurisdiction");
  if (jurisdiction.empty()) jurisdiction = "default";
  const bool created = r2_create ? r2_create(name, jurisdiction) : r2_buckets.insert(name).second;
  if (!created) {
    return failure(409, kBucketExists,
                   "The bucket you tried to create already exists, and you own it.");
  }
  return ok({{"name", name},
             {"creation_date", "2026-12-03T00:00:00.000Z"},
             {"location", "WEUR"},
             {"jurisdiction", jurisdiction},
             {"storage_class", "Standard"}});
}

Reply FakeCloudflare::State::workers_route(const FakeRequest& request,
                                     const std::vector<std::string>& seg,
                                     const std::map<std::string, std::string>& query,
                                     std::string& route_name) {
  // /accounts/{a}/workers/scripts/{s}/<what>[/{id}]
  if (seg.size() < 6 || seg[3] != "scripts") return failure(404, kRouteError, "No route for that URI");
  const std::string script = url_decode(seg[4]);
  const std::string what = seg[5];
  const std::string base = "/accounts/{account_id}/workers/scripts/{script_name}/" + what;
  const bool with_id = seg.size() == 7;
  if (seg.size() > 7) return failure(404, kRouteError, "No route for that URI");
  const std::string& m = request.method;
  route_name = m + " " + base;
  if (with_id) {
    route_name += what == "secrets" ? "/{secret_name}" : what == "versions" ? "/{version_id}" : "/{deployment_id}";
  }
  const auto it = workers.find(script);
  if (it == workers.end()) {
    return failure(404, kWorkerNotFound, "This Worker does not exist on your account.");
  }
  CfWorker& w = it->second;

  if (what == "versions" && !with_id && m == "POST") return upload(w, request);
  if (what == "versions" && !with_id && m == "GET") {
    int per_page = 10, page = 1;
    if (const auto p = query.find("per_page"); p != query.end()) per_page = std::atoi(p->second.c_str());
    if (const auto p = query.find("page"); p != query.end()) page = std::atoi(p->second.c_str());
    if (per_page < 1 || per_page > 100 || page < 1) {
      return failure(400, kBadRequest, "per_page must be 1..100 and page at least 1");
    }
    json items = json::array();
    const int total = static_cast<int>(w.versions.size());
    for (int i = total - 1 - (page - 1) * per_page, n = 0; i >= 0 && n < per_page; --i, ++n) {
      items.push_back(version_json(w.versions[static_cast<std::size_t>(i)]));
    }
    Reply r = ok({{"items", items}});
    r.body["result_info"] = {{"page", page}, {"per_page", per_page}, {"count", items.size()},
                             {"total_count", total}};
    return r;
  }
  if (what == "versions" && with_id && m == "GET") {
    if (const auto* v = version(w, seg[6])) return ok(version_json(*v));
    return failure(404, kBadRequest, "version not found");
  }
  if (what == "deployments" && !with_id && m == "GET") {
    json list = json::array();
    for (auto d = w.deployments.rbegin(); d != w.deployments.rend(); ++d) list.push_back(deployment_json(*d));
    return ok({{"deployments", list}});
  }
  if (what == "deployments" && !with_id && m == "POST") {
    const auto force = query.find("force");
    return create_deployment(w, request, force != query.end() && force->second == "true");
  }
  if (what == "secrets") {
    CfVersion* latest_version = latest(w);
    if (!with_id && m == "GET") {
      json list = json::array();
      for (const auto& [name, value] : latest_version->secrets) {
        list.push_back({{"name", name}, {"type", "secret_text"}});
      }
      return ok(list);
    }
    const bool edit = (!with_id && m == "PUT") || (with_id && m == "DELETE");
    if (!edit) return failure(405, kRouteError, "Method not allowed");
    if (!latest_deployed(w)) {
      return failure(400, kNotDeployed,
                     "Secret edit failed. You attempted to modify a secret, but the latest version "
                     "of your Worker isn't currently deployed. Please ensure that the latest "
                     "version of your Worker is fully deployed (wrangler versions deploy) before "
                     "modifying secrets.");
    }
    auto secrets = latest_version->secrets;
    if (m == "PUT") {
      const json body = json::parse(request.body, nullptr, false);
      if (!body.is_object() || !body.contains("name") || !body["name"].is_string() ||
          !body.contains("text") || !body["text"].is_string() ||
          body.value("type", "") != "secret_text") {
        return failure(400, kBadRequest, "expected {name, text, type: secret_text}");
      }
      const std::string name = body["name"].get<std::string>();
      secrets[name] = body["text"].get<std::string>();
      secret_change(w, secrets);
      return ok({{"name", name}, {"type", "secret_text"}});
    }
    const std::string name = url_decode(seg[6]);
    if (secrets.erase(name) == 0) return failure(404, kSecretNotFound, "secret not found");
    secret_change(w, secrets);
    return ok(nullptr);
  }
  return failure(405, kRouteError, "Method not allowed");
}

Reply FakeCloudflare::State::upload(CfWorker& w, const FakeRequest& request) {
  const auto parts = parse_multipart(request.header("content-type"), request.body);
  if (!parts || parts->empty()) return failure(400, kBadRequest, "expected a multipart/form-data body");
  const CfFormPart& first = parts->front();
  if (first.name != "metadata" || lower(first.content_type).rfind("application/json", 0) != 0) {
    return failure(400, kBadRequest, "the first part must be metadata (application/json)");
  }
  const json metadata = json::parse(first.body, nullptr, false);
  if (!metadata.is_object() || !metadata.contains("main_module") ||
      !metadata["main_module"].is_string()) {
    return failure(400, kBadRequest, "metadata needs main_module (module syntax only)");
  }
  CfVersion v;
  v.main_module = metadata["main_module"].get<std::string>();
  for (std::size_t i = 1; i < parts->size(); ++i) {
    const CfFormPart& p = (*parts)[i];
    if (p.name.empty() || kModuleTypes.count(lower(p.content_type)) == 0) {
      return failure(400, kBadRequest, "part " + p.name + " has no module content type (" +
                                           p.content_type + ")");
    }
    v.modules.push_back({p.name, p.content_type, p.body});
  }
  const bool has_main = std::any_of(v.modules.begin(), v.modules.end(),
                                    [&](const CfModule& m) { return m.name == v.main_module; });
  if (!has_main) return failure(400, kBadRequest, "main_module " + v.main_module + " is not a part");
  if (metadata.contains("annotations")) {
    const json& a = metadata["annotations"];
    if (!a.is_object()) return failure(400, kBadRequest, "annotations must be an object");
    json kept = a;
    if (kept.contains("workers/message") && kept["workers/message"].is_string()) {
      std::string text = kept["workers/message"].get<std::string>();
      if (text.size() > 1000) text.resize(1000);  // truncated, as documented
      kept["workers/message"] = text;
    }
    if (kept.contains("workers/tag") && kept["workers/tag"].is_string() &&
        kept["workers/tag"].get<std::string>().size() > 100) {
      return failure(400, kBadRequest, "workers/tag is longer than 100 bytes");
    }
    v.annotations = kept;
  }
  v.compatibility_date = metadata.value("compatibility_date", "");
  // Without keep_bindings the new version has only the bindings it lists: secrets are dropped.
  bool keep_secrets = false;
  if (metadata.contains("keep_bindings") && metadata["keep_bindings"].is_array()) {
    for (const auto& b : metadata["keep_bindings"]) keep_secrets = keep_secrets || b == "secret_text";
  }
  if (keep_secrets) v.secrets = latest(w)->secrets;
  v.metadata = metadata;
  v.id = new_id("v");
  v.number = static_cast<int>(w.versions.size()) + 1;
  v.source = "api";
  w.versions.push_back(v);
  return ok({{"id", v.id},
             {"number", v.number},
             {"metadata", {{"source", "api"}, {"hasPreview", false}}},
             {"resources", {{"script", {{"etag", "e" + v.id}}}}}});
}

Reply FakeCloudflare::State::create_deployment(CfWorker& w, const FakeRequest& request,
                                               bool force) {
  const json body = json::parse(request.body, nullptr, false);
  if (!body.is_object() || body.value("strategy", "") != "percentage" || !body.contains("versions") ||
      !body["versions"].is_array()) {
    return failure(400, kBadRequest, "expected {strategy: percentage, versions: [...]}");
  }
  const json& versions = body["versions"];
  if (versions.empty() || versions.size() > 2) {
    return failure(400, kBadRequest, "a deployment has one or two versions");
  }
  CfDeployment d;
  double sum = 0;
  std::vector<std::string> changed;
  const CfVersion& current = w.versions.back();
  for (const auto& v : versions) {
    if (!v.is_object() || !v.contains("version_id") || !v["version_id"].is_string() ||
        !v.contains("percentage") || !v["percentage"].is_number()) {
      return failure(400, kBadRequest, "each version needs version_id and percentage");
    }
    const std::string id = v["version_id"].get<std::string>();
    const double p = v["percentage"].get<double>();
    const CfVersion* found = version(w, id);
    if (found == nullptr) return failure(404, kBadRequest, "version " + id + " not found");
    if (p < 0 || p > 100) return failure(400, kBadRequest, "percentages are 0..100");
    sum += p;
    for (const auto& [name, value] : current.secrets) {
      const auto there = found->secrets.find(name);
      if (there == found->secrets.end() || there->second != value) changed.push_back(name);
    }
    for (const auto& [name, value] : found->secrets) {
      if (current.secrets.count(name) == 0) changed.push_back(name);
    }
    d.versions.emplace_back(id, p);
  }
  if (std::fabs(sum - 100) > 1e-6) return failure(400, kBadRequest, "percentages must sum to 100");
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  if (!changed.empty() && !force) {
    std::string names;
    for (const auto& n : changed) names += (names.empty() ? "" : ", ") + n;
    return failure(400, kSecretsChanged, "The following secrets have changed: " + names);
  }
  d.id = new_id("d");
  d.forced = force;
  if (body.contains("annotations") && body["annotations"].is_object()) d.annotations = body["annotations"];
  w.deployments.push_back(d);
  return ok(deployment_json(d));
}

Reply FakeCloudflare::State::containers_route(const FakeRequest& request,
                                        const std::vector<std::string>& seg,
                                        std::string& route_name) {
  // /accounts/{a}/containers/applications/{id}[/rollouts[/{rid}]]
  if (seg.size() < 5 || seg[3] != "applications") return failure(404, kRouteError, "No route for that URI");
  const std::string& m = request.method;
  const std::string base = "/accounts/{account_id}/containers/applications/{application_id}";
  const auto it = applications.find(seg[4]);
  if (seg.size() == 5) route_name = m + " " + base;
  if (seg.size() == 6 && seg[5] == "rollouts") route_name = m + " " + base + "/rollouts";
  if (seg.size() == 7 && seg[5] == "rollouts") route_name = m + " " + base + "/rollouts/{rollout_id}";
  if (route_name.empty()) return failure(404, kRouteError, "No route for that URI");
  if (it == applications.end()) return failure(404, kRouteError, "application not found");
  CfApplication& app = it->second;
  if (seg.size() == 5 && m == "GET") {
    // Without a readable rollout, a read of the application moves its rollout on.
    if (!rollout_get && !app.active_rollout.empty()) {
      for (auto& r : rollouts) {
        if (r.id == app.active_rollout) read_rollout(r);
      }
    }
    return ok(application_json(app));
  }
  if (seg.size() == 6 && m == "POST") {
    const json body = json::parse(request.body, nullptr, false);
    if (!body.is_object()) return failure(400, kBadRequest, "expected a JSON object");
    const std::string description = body.value("description", "");
    const std::string strategy = body.value("strategy", "");
    const std::string kind = body.value("kind", "full_auto");
    std::string image;
    if (body.contains("target_configuration") && body["target_configuration"].is_object()) {
      image = body["target_configuration"].value("image", "");
    }
    if (description.empty() || image.empty() ||
        (strategy != "rolling" && strategy != "new_instances") ||
        (kind != "full_auto" && kind != "full_manual")) {
      return failure(400, kBadRequest,
                     "a rollout needs description, strategy (rolling|new_instances), "
                     "target_configuration.image and kind full_auto|full_manual");
    }
    if (strategy == "rolling") {
      const bool has_pct = body.contains("step_percentage");
      const bool has_steps = body.contains("steps");
      if (has_pct == has_steps) return failure(400, kBadRequest, "rolling needs step_percentage or steps");
      if (has_pct) {
        const json& p = body["step_percentage"];
        const std::set<int> allowed{5, 10, 20, 25, 50, 100};
        if (!p.is_number_integer() || allowed.count(p.get<int>()) == 0) {
          return failure(400, kBadRequest, "step_percentage is one of 5, 10, 20, 25, 50, 100");
        }
      } else {
        if (!body["steps"].is_array() || body["steps"].empty()) {
          return failure(400, kBadRequest, "steps must be a list");
        }
        for (const auto& step : body["steps"]) {
          const json* pct = nullptr;
          if (step.is_object() && step.contains("step_size") && step["step_size"].is_object() &&
              step["step_size"].contains("percentage")) {
            pct = &step["step_size"]["percentage"];
          }
          if (pct == nullptr || !pct->is_number_integer() || pct->get<int>() < 10 ||
              pct->get<int>() > 100) {
            return failure(400, kBadRequest, "each step has step_size.percentage 10..100");
          }
        }
      }
    }
    for (auto& r : rollouts) {
      if (r.id == app.active_rollout && r.status == "progressing") r.status = "replaced";
    }
    CfRollout r;
    r.id = rollout_id();
    r.application = app.id;
    r.description = description;
    r.strategy = strategy;
    r.kind = kind;
    r.image = image;
    r.previous_image = app.image;
    r.body = body;
    app.active_rollout = r.id;
    rollouts.push_back(r);
    return ok(rollout_json(r), 201);
  }
  if (seg.size() == 7 && m == "GET") {
    if (!rollout_get) return failure(404, kRouteError, "No route for that URI");
    for (auto& r : rollouts) {
      if (r.id == seg[6] && r.application == app.id) {
        read_rollout(r);
        return ok(rollout_json(r));
      }
    }
    return failure(404, kRouteError, "rollout not found");
  }
  return failure(405, kRouteError, "Method not allowed");
}

void FakeCloudflare::add_token(std::string token, bool account, std::string status,
                               std::string expires_on) {
  std::lock_guard lock(state_->mutex);
  TokenInfo info{fmt::format("tok{:029d}", state_->tokens.size() + 1), account, std::move(status),
                 std::move(expires_on)};
  state_->tokens[std::move(token)] = std::move(info);
}

std::string FakeCloudflare::token_id(const std::string& token) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->tokens.find(token);
  return it == state_->tokens.end() ? std::string{} : it->second.id;
}

void FakeCloudflare::set_r2_buckets(R2BucketCreate create) {
  std::lock_guard lock(state_->mutex);
  state_->r2_create = std::move(create);
}

std::optional<std::string> FakeCloudflare::token_by_id(const std::string& id) const {
  std::lock_guard lock(state_->mutex);
  for (const auto& [token, info] : state_->tokens) {
    if (info.id == id && info.status == "active") return token;
  }
  return std::nullopt;
}

void FakeCloudflare::add_worker(const std::string& name, std::map<std::string, std::string> secrets) {
  std::lock_guard lock(state_->mutex);
  CfWorker w;
  w.name = name;
  CfVersion v;
  v.id = state_->new_id("v");
  v.number = 1;
  v.main_module = "index.js";
  v.modules = {{"index.js", "application/javascript+module", "export default {}"}};
  v.secrets = std::move(secrets);
  v.source = "initial";
  w.versions.push_back(v);
  state_->deploy_at_100(w, v.id, "first deploy");
  state_->workers[name] = std::move(w);
}

std::optional<CfWorker> FakeCloudflare::worker(const std::string& name) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->workers.find(name);
  if (it == state_->workers.end()) return std::nullopt;
  return it->second;
}

std::string FakeCloudflare::add_version(const std::string& name) {
  std::lock_guard lock(state_->mutex);
  CfWorker& w = state_->workers.at(name);
  CfVersion v = w.versions.back();
  v.id = state_->new_id("v");
  v.number = static_cast<int>(w.versions.size()) + 1;
  v.source = "wrangler";
  v.annotations = json::object();
  w.versions.push_back(v);
  return v.id;
}

void FakeCloudflare::add_deployment(const std::string& name,
                                    std::vector<std::pair<std::string, double>> versions) {
  std::lock_guard lock(state_->mutex);
  CfDeployment d;
  d.id = state_->new_id("d");
  d.versions = std::move(versions);
  state_->workers.at(name).deployments.push_back(std::move(d));
}

std::map<std::string, std::string> FakeCloudflare::secrets(const std::string& name) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->workers.find(name);
  if (it == state_->workers.end() || it->second.versions.empty()) return {};
  return it->second.versions.back().secrets;
}

void FakeCloudflare::add_application(const std::string& id, const std::string& image) {
  std::lock_guard lock(state_->mutex);
  state_->applications[id] = CfApplication{id, id + "-app", image, {}};
}

std::optional<CfApplication> FakeCloudflare::application(const std::string& id) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->applications.find(id);
  if (it == state_->applications.end()) return std::nullopt;
  return it->second;
}

std::vector<CfRollout> FakeCloudflare::rollouts() const {
  std::lock_guard lock(state_->mutex);
  return state_->rollouts;
}

void FakeCloudflare::set_rollouts_revert(bool revert) {
  std::lock_guard lock(state_->mutex);
  state_->revert = revert;
}

void FakeCloudflare::set_rollout_get_supported(bool supported) {
  std::lock_guard lock(state_->mutex);
  state_->rollout_get = supported;
}

void FakeCloudflare::fail_with_success_false(int times, std::string route) {
  std::lock_guard lock(state_->mutex);
  state_->success_false = times;
  state_->success_false_route = std::move(route);
}

void FakeCloudflare::set_rate_limit_remaining(int remaining) {
  std::lock_guard lock(state_->mutex);
  state_->used = std::max(0, state_->options.rate_limit - remaining);
}

std::vector<CfCall> FakeCloudflare::calls() const {
  std::lock_guard lock(state_->mutex);
  return state_->calls;
}

std::size_t FakeCloudflare::count(const std::string& route) const {
  std::lock_guard lock(state_->mutex);
  return static_cast<std::size_t>(std::count_if(state_->calls.begin(), state_->calls.end(),
                                                [&](const CfCall& c) { return c.route == route; }));
}

void FakeCloudflare::clear_calls() {
  std::lock_guard lock(state_->mutex);
  state_->calls.clear();
}

FakeCloudflareServer::FakeCloudflareServer(FakeCloudflare::Options options,
                                           FakeHttpServer::Options http)
    : cloudflare_(std::move(options)), server_(cloudflare_.handler(), std::move(http)) {}

}  // namespace orgd::testing
