#include "tests/fakes/fake_github.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <sstream>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing {

using namespace github_fake;

namespace github_fake {

std::string Ctx::query_value(const std::string& name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return v;
  }
  return "";
}

json Ctx::body() const {
  if (request.body.empty()) return json::object();
  json parsed = json::parse(request.body, nullptr, false);
  if (parsed.is_discarded()) throw BadJson{};
  return parsed;
}

std::string iso8601(TimePoint t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<TimePoint> parse_iso8601(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  int used = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) {
    return std::nullopt;
  }
  std::string rest = text.substr(10);
  long offset = 0;
  if (!rest.empty()) {
    int used2 = 0;
    if ((rest[0] != 'T' && rest[0] != ' ') ||
        std::sscanf(rest.c_str() + 1, "%2d:%2d:%2d%n", &h, &mi, &s, &used2) != 3) {
      return std::nullopt;
    }
    std::string zone = rest.substr(1 + used2);
    if (!zone.empty() && zone[0] == '.') {  // fractional seconds: ignored
      std::size_t i = 1;
      while (i < zone.size() && std::isdigit(static_cast<unsigned char>(zone[i]))) ++i;
      zone = zone.substr(i);
    }
    if (zone == "Z" || zone.empty()) {
      offset = 0;
    } else if ((zone[0] == '+' || zone[0] == '-') && zone.size() == 6 && zone[3] == ':') {
      int oh = std::atoi(zone.substr(1, 2).c_str()), om = std::atoi(zone.substr(4, 2).c_str());
      offset = (zone[0] == '+' ? 1 : -1) * (oh * 3600L + om * 60L);
    } else {
      return std::nullopt;
    }
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  std::time_t t = timegm(&tm);
  return std::chrono::system_clock::from_time_t(t - offset);
}

std::string base64(std::string_view bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

std::optional<std::string> unbase64(std::string_view text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Reply error(int status, const std::string& message, const std::string& documentation_url) {
  return Reply{status,
               json{{"message", message},
                    {"documentation_url", documentation_url},
                    {"status", std::to_string(status)}},
               false,
               {}};
}

Reply invalid_request(const std::string& detail) {
  return error(422, "Invalid request.\n\n" + detail);
}

Reply validation_failed(const std::string& resource, const std::string& field,
                        const std::string& code, const std::string& message) {
  json e{{"resource", resource}, {"field", field}, {"code", code}};
  if (!message.empty()) e["message"] = message;
  Reply r = error(422, "Validation Failed");
  r.body["errors"] = json::array({e});
  return r;
}

Reply not_found() { return error(404, "Not Found"); }

Reply created(json body) { return Reply{201, std::move(body), false, {}}; }

Reply no_content(int status) { return Reply{status, nullptr, true, {}}; }

Reply paginate(const Ctx& ctx, const std::vector<json>& items,
               const std::function<json(json, std::size_t)>& wrap) {
  auto number = [](const std::string& s, long fallback) {
    if (s.empty() || !std::all_of(s.begin(), s.end(), ::isdigit) || s.size() > 9) {
      return fallback;
    }
    return std::stol(s);
  };
  long per_page = number(ctx.query_value("per_page"), 30);
  if (per_page <= 0) per_page = 30;
  per_page = std::min(per_page, 100L);
  long page = std::max(number(ctx.query_value("page"), 1), 1L);
  const long total = static_cast<long>(items.size());
  const long last = std::max(1L, (total + per_page - 1) / per_page);

  json slice = json::array();
  for (long i = (page - 1) * per_page; i < std::min(total, page * per_page); ++i) {
    slice.push_back(items[static_cast<std::size_t>(i)]);
  }
  Reply r{200, wrap ? wrap(std::move(slice), items.size()) : std::move(slice), false, {}};

  // The links keep the request's other parameters as they were sent, as GitHub's do.
  std::string kept;
  const std::string& raw = ctx.request.query;
  for (std::size_t start = 0; start < raw.size();) {
    std::size_t end = raw.find('&', start);
    if (end == std::string::npos) end = raw.size();
    const std::string part = raw.substr(start, end - start);
    if (!part.empty() && part != "page" && part.rfind("page=", 0) != 0) kept += part + "&";
    start = end + 1;
  }
  auto link = [&](long p, const char* rel) {
    return "<" + ctx.base_url + ctx.request.path + "?" + kept + "page=" + std::to_string(p) +
           ">; rel=\"" + rel + "\"";
  };
  std::vector<std::string> links;
  if (page > 1) links.push_back(link(std::min(page - 1, last), "prev"));
  if (page < last) links.push_back(link(page + 1, "next"));
  if (page < last) links.push_back(link(last, "last"));
  if (page > 1) links.push_back(link(1, "first"));
  if (!links.empty()) {
    std::string value;
    for (const auto& l : links) value += (value.empty() ? "" : ", ") + l;
    r.headers.push_back({"Link", value});
  }
  return r;
}

bool token_valid(const FakeGithub::State& state, const std::string& token, TimePoint now) {
  if (state.tokens.count(token) != 0) return true;
  auto it = state.installation_tokens.find(token);
  return it != state.installation_tokens.end() && now < it->second;
}

}  // namespace github_fake

namespace {

std::string percent_decode(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() &&
        std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (in[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_query(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    std::size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    std::string part = query.substr(start, end - start);
    if (!part.empty()) {
      auto eq = part.find('=');
      out.emplace_back(percent_decode(part.substr(0, eq)),
                       eq == std::string::npos ? "" : percent_decode(part.substr(eq + 1)));
    }
    start = end + 1;
  }
  return out;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      if (!cur.empty()) out.push_back(percent_decode(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(percent_decode(cur));
  return out;
}

bool match(const std::string& pattern, const std::vector<std::string>& segments,
           std::map<std::string, std::string>& params) {
  auto parts = split_path(pattern);
  if (parts.size() != segments.size()) return false;
  std::map<std::string, std::string> found;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].size() > 2 && parts[i].front() == '{' && parts[i].back() == '}') {
      found[parts[i].substr(1, parts[i].size() - 2)] = segments[i];
    } else if (parts[i] != segments[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

const char* kRateLimitDocs =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";
const char* kSecondaryDocs =
    "https://docs.github.com/free-pro-team@latest/rest/overview/"
    "rate-limits-for-the-rest-api#about-secondary-rate-limits";

std::string request_id(std::size_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "C0DE:%04zX:%06zX:%06zX:6744F%03zX", n % 0xFFFF, n * 7919,
                n * 104729, n % 0xFFF);
  return buf;
}

Reply rate_limit_answer(FakeGithub::State& s, Ctx& ctx) {
  const int remaining = std::max(0, s.options.rate_limit - s.used);
  const auto reset = std::chrono::duration_cast<std::chrono::seconds>(
                         s.reset_at.time_since_epoch())
                         .count();
  json core{{"limit", s.options.rate_limit},
            {"used", s.used},
            {"remaining", remaining},
            {"reset", reset}};
  auto other = [&](int limit) {
    return json{{"limit", limit}, {"used", 0}, {"remaining", limit}, {"reset", reset}};
  };
  json body{{"resources",
             {{"core", core},
              {"search", other(30)},
              {"graphql", other(5000)},
              {"integration_manifest", other(5000)},
              {"code_scanning_upload", other(1000)},
              {"actions_runner_registration", other(10000)}}}};
  // The top-level `rate` went away in 2026-03-10 (cloud-apis.md §1.0).
  if (ctx.api_version == "2022-11-28") body["rate"] = core;
  return Reply{200, body, false, {}};
}

// Enough of a repository for a client that needs its id (selected_repository_ids).
Reply repository_answer(FakeGithub::State& s, Ctx& ctx) {
  const std::string& owner = ctx.param("owner");
  const std::string& repo = ctx.param("repo");
  const std::int64_t id = s.repo_id(owner, repo);
  return Reply{200,
               json{{"id", id},
                    {"node_id", "R_kgDO" + std::to_string(id)},
                    {"name", repo},
                    {"full_name", owner + "/" + repo},
                    {"private", true},
                    {"owner", {{"login", owner}}},
                    {"default_branch", "main"},
                    {"html_url", "https://github.com/" + owner + "/" + repo},
                    {"url", ctx.base_url + "/repos/" + owner + "/" + repo}},
               false,
               {}};
}

}  // namespace

// ---- State ------------------------------------------------------------------------------------

TimePoint FakeGithub::State::now() const {
  return options.clock ? options.clock() : std::chrono::system_clock::now();
}

github_fake::ScopeData& FakeGithub::State::scope(const std::string& key) {
  auto it = scopes.find(key);
  if (it != scopes.end()) return it->second;
  ScopeData& data = scopes[key];
  crypto_box_keypair(data.public_key.data(), data.secret_key.data());
  data.key_id = std::to_string(next_key_id++);
  return data;
}

std::int64_t FakeGithub::State::repo_id(const std::string& owner, const std::string& repo) {
  auto [it, inserted] = repo_ids.try_emplace(lower(owner) + "/" + lower(repo), next_repo_id);
  if (inserted) next_repo_id += 17;
  return it->second;
}

void FakeGithub::State::refresh_window(TimePoint t) {
  if (t >= reset_at) {
    used = 0;
    reset_at = std::chrono::time_point_cast<std::chrono::seconds>(t) + std::chrono::hours(1);
  }
}

// ---- SecretScope, FakeCall --------------------------------------------------------------------

SecretScope SecretScope::repository(std::string owner, std::string repo) {
  return {Kind::repository, std::move(owner), std::move(repo), {}};
}
SecretScope SecretScope::env(std::string owner, std::string repo, std::string environment) {
  return {Kind::environment, std::move(owner), std::move(repo), std::move(environment)};
}
SecretScope SecretScope::org(std::string org) {
  return {Kind::organization, std::move(org), {}, {}};
}
std::string SecretScope::key() const {
  // GitHub's owner and repository names are case-insensitive; environment names are kept.
  switch (kind) {
    case Kind::repository:
      return "repo:" + lower(owner) + "/" + lower(repo);
    case Kind::environment:
      return "env:" + lower(owner) + "/" + lower(repo) + "/" + environment;
    case Kind::organization:
      return "org:" + lower(owner);
  }
  return "";
}

std::string FakeCall::header(std::string_view name) const {
  FakeRequest r;
  r.headers = headers;
  return r.header(name);
}

// ---- FakeFault --------------------------------------------------------------------------------

FakeFault FakeFault::server_errors(int times, int status) {
  FakeFault f;
  f.kind = Kind::server_error;
  f.times = times;
  f.status = status;
  return f;
}
FakeFault FakeFault::too_many_requests(std::chrono::seconds retry_after, int times) {
  FakeFault f;
  f.kind = Kind::too_many_requests;
  f.times = times;
  f.retry_after = retry_after;
  return f;
}
FakeFault FakeFault::secondary_limit(std::optional<std::chrono::seconds> retry_after, int times) {
  FakeFault f;
  f.kind = Kind::secondary_limit;
  f.times = times;
  f.retry_after = retry_after;
  return f;
}
FakeFault FakeFault::slow(std::chrono::milliseconds delay, int times) {
  FakeFault f;
  f.kind = Kind::slow;
  f.times = times;
  f.delay = delay;
  return f;
}
FakeFault FakeFault::dropped(int times) {
  FakeFault f;
  f.kind = Kind::drop;
  f.times = times;
  return f;
}
FakeFault FakeFault::on(std::string route_name) && {
  route = std::move(route_name);
  return std::move(*this);
}

// ---- FakeGithub -------------------------------------------------------------------------------

FakeGithub::FakeGithub() : FakeGithub(Options{}) {}

FakeGithub::FakeGithub(Options options) : state_(std::make_unique<State>()) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to start");
  state_->options = std::move(options);
  add_secret_routes(state_->routes);
  add_actions_routes(state_->routes);
  add_deployment_routes(state_->routes);
  add_app_routes(state_->routes);
  state_->routes.push_back({"GET", "/rate_limit", rate_limit_answer, false});
  state_->routes.push_back({"GET", "/repos/{owner}/{repo}", repository_answer});
  state_->refresh_window(state_->now());
}

FakeGithub::~FakeGithub() = default;

FakeHttpServer::Handler FakeGithub::handler() {
  return [this](const FakeRequest& r) { return handle(r); };
}

void FakeGithub::set_base_url(std::string base_url) {
  std::lock_guard lock(state_->mutex);
  state_->base_url = std::move(base_url);
}

FakeResponse FakeGithub::handle(const FakeRequest& request) {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  const TimePoint now = s.now();
  s.refresh_window(now);

  Ctx ctx{request, {}, parse_query(request.query), "2022-11-28",
          s.base_url.empty() ? "http://" + request.header("host") : s.base_url, now};
  FakeCall call{request.method, request.path, request.query, "", request.headers, request.body};

  const Route* route = nullptr;
  const auto segments = split_path(request.path);
  for (const auto& r : s.routes) {
    if (r.method == request.method && match(r.pattern, segments, ctx.params)) {
      route = &r;
      call.route = r.method + " " + r.pattern;
      break;
    }
  }

  Reply reply;
  std::chrono::milliseconds delay = s.delay;
  bool drop = false;
  bool answered = false;
  bool counts = route != nullptr && route->pattern != "/rate_limit";

  const std::string version = request.header("x-github-api-version");
  if (!version.empty()) {
    if (version != "2022-11-28" && version != "2026-03-10") {
      reply = error(400, "API version '" + version + "' is not supported.");
      answered = true;
      counts = false;
    }
    ctx.api_version = version;
  }

  if (!answered && route != nullptr && route->needs_token) {
    const std::string auth = request.header("authorization");
    const auto space = auth.find(' ');
    const std::string scheme = lower(auth.substr(0, space));
    const std::string token = space == std::string::npos ? "" : auth.substr(space + 1);
    if (auth.empty()) {
      reply = error(401, "Requires authentication");
      answered = true;
    } else if ((scheme != "bearer" && scheme != "token") || !token_valid(s, token, now)) {
      reply = error(401, "Bad credentials");
      answered = true;
    }
    counts = counts && !answered;
  }

  if (!answered) {
    for (auto it = s.faults.begin(); it != s.faults.end(); ++it) {
      if (!it->route.empty() && it->route != call.route) continue;
      FakeFault f = *it;
      if (--it->times <= 0) s.faults.erase(it);
      switch (f.kind) {
        case FakeFault::Kind::server_error:
          reply = error(f.status, f.status == 500 ? "Server Error" : "Service Unavailable");
          answered = true;
          break;
        case FakeFault::Kind::too_many_requests:
        case FakeFault::Kind::secondary_limit: {
          const bool is_429 = f.kind == FakeFault::Kind::too_many_requests;
          reply = error(is_429 ? 429 : 403,
                        "You have exceeded a secondary rate limit. Please wait a few minutes "
                        "before you try again. If you reach out to GitHub Support for help, "
                        "please include the request ID " +
                            request_id(s.calls.size()) + ".",
                        kSecondaryDocs);
          auto retry = f.retry_after;
          if (is_429 && !retry) retry = std::chrono::seconds(60);
          if (retry) reply.headers.push_back({"retry-after", std::to_string(retry->count())});
          answered = true;
          counts = false;
          break;
        }
        case FakeFault::Kind::slow:
          delay += f.delay;
          break;
        case FakeFault::Kind::drop:
          drop = true;
          break;
      }
      break;
    }
  }

  if (!answered && counts && s.used >= s.options.rate_limit) {
    reply = error(403,
                  "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for "
                  "help, please include the request ID " +
                      request_id(s.calls.size()) + ".",
                  kRateLimitDocs);
    answered = true;
    counts = false;
  }

  if (!answered) {
    if (route == nullptr) {
      reply = not_found();
    } else {
      try {
        reply = route->answer(s, ctx);
      } catch (const BadJson&) {
        reply = error(400, "Problems parsing JSON");
      } catch (const std::exception& e) {
        reply = error(500, std::string("Server Error: ") + e.what());
      }
    }
  }
  if (counts) ++s.used;

  FakeResponse out;
  out.status = reply.status;
  out.delay = delay;
  out.drop = drop;
  const int remaining = std::max(0, s.options.rate_limit - s.used);
  const auto reset =
      std::chrono::duration_cast<std::chrono::seconds>(s.reset_at.time_since_epoch()).count();
  out.headers = {
      {"Content-Type", "application/json; charset=utf-8"},
      {"X-GitHub-Api-Version-Selected", ctx.api_version},
      {"X-GitHub-Request-Id", request_id(s.calls.size())},
      {"x-ratelimit-limit", std::to_string(s.options.rate_limit)},
      {"x-ratelimit-remaining", std::to_string(remaining)},
      {"x-ratelimit-reset", std::to_string(reset)},
      {"x-ratelimit-used", std::to_string(s.used)},
      {"x-ratelimit-resource", "core"},
  };
  for (auto& h : reply.headers) out.headers.push_back(std::move(h));
  if (!reply.no_body) out.body = reply.body.dump();
  call.status = out.status;
  s.calls.push_back(std::move(call));
  return out;
}

void FakeGithub::add_token(std::string token) {
  std::lock_guard lock(state_->mutex);
  state_->tokens.insert(std::move(token));
}

void FakeGithub::revoke_token(const std::string& token) {
  std::lock_guard lock(state_->mutex);
  state_->tokens.erase(token);
  state_->installation_tokens.erase(token);
}

std::int64_t FakeGithub::app_id() const { return state_->options.app_id; }
std::string FakeGithub::app_client_id() const { return state_->options.app_client_id; }
std::int64_t FakeGithub::installation_id() const { return state_->options.installation_id; }

std::string FakeGithub::app_private_key_pem() const {
  std::lock_guard lock(state_->mutex);
  state_->ensure_app_key();
  return state_->app_private_pem;
}

std::string FakeGithub::app_private_key_file() const {
  std::lock_guard lock(state_->mutex);
  state_->ensure_app_key();
  return state_->app_private_file;
}

std::string FakeGithub::app_public_key_pem() const {
  std::lock_guard lock(state_->mutex);
  state_->ensure_app_key();
  return state_->app_public_pem;
}

std::vector<std::string> FakeGithub::issued_installation_tokens() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::string> out;
  for (const auto& [token, expiry] : state_->installation_tokens) out.push_back(token);
  return out;
}

void FakeGithub::expire_installation_tokens() {
  std::lock_guard lock(state_->mutex);
  for (auto& [token, expiry] : state_->installation_tokens) expiry = TimePoint{};
}

std::optional<std::string> FakeGithub::secret_value(const SecretScope& scope,
                                                    const std::string& name) const {
  auto s = secret(scope, name);
  if (!s) return std::nullopt;
  return s->value;
}

std::optional<FakeSecret> FakeGithub::secret(const SecretScope& scope,
                                             const std::string& name) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->scopes.find(scope.key());
  if (it == state_->scopes.end()) return std::nullopt;
  auto s = it->second.secrets.find(upper(name));
  if (s == it->second.secrets.end()) return std::nullopt;
  return s->second;
}

std::vector<std::string> FakeGithub::secret_names(const SecretScope& scope) const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::string> out;
  auto it = state_->scopes.find(scope.key());
  if (it == state_->scopes.end()) return out;
  for (const auto& [name, secret] : it->second.secrets) out.push_back(name);
  return out;
}

void FakeGithub::rotate_public_key(const SecretScope& scope) {
  std::lock_guard lock(state_->mutex);
  ScopeData& data = state_->scope(scope.key());
  crypto_box_keypair(data.public_key.data(), data.secret_key.data());
  data.key_id = std::to_string(state_->next_key_id++);
}

std::string FakeGithub::public_key_id(const SecretScope& scope) const {
  std::lock_guard lock(state_->mutex);
  return state_->scope(scope.key()).key_id;
}

std::string FakeGithub::public_key(const SecretScope& scope) const {
  std::lock_guard lock(state_->mutex);
  const auto& k = state_->scope(scope.key()).public_key;
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

std::int64_t FakeGithub::repository_id(const std::string& owner, const std::string& repo) {
  std::lock_guard lock(state_->mutex);
  return state_->repo_id(owner, repo);
}

void FakeGithub::set_run_name(const std::string& workflow, std::string run_name_template) {
  std::lock_guard lock(state_->mutex);
  state_->run_names[workflow] = std::move(run_name_template);
}

void FakeGithub::set_return_run_details_supported(bool supported) {
  std::lock_guard lock(state_->mutex);
  state_->return_run_details_supported = supported;
}

void FakeGithub::set_new_runs_hidden_for_lists(int lists) {
  std::lock_guard lock(state_->mutex);
  state_->hide_new_runs_for = lists;
}

void FakeGithub::set_workflows(const std::string& owner, const std::string& repo,
                               std::vector<std::string> workflows) {
  std::lock_guard lock(state_->mutex);
  state_->workflows[lower(owner) + "/" + lower(repo)] = {workflows.begin(), workflows.end()};
}

void FakeGithub::set_refs(const std::string& owner, const std::string& repo,
                          std::vector<std::string> refs) {
  std::lock_guard lock(state_->mutex);
  state_->refs[lower(owner) + "/" + lower(repo)] = {refs.begin(), refs.end()};
}

void FakeGithub::complete_runs_after_polls(int polls, std::string conclusion) {
  std::lock_guard lock(state_->mutex);
  state_->complete_after_polls = polls;
  state_->auto_conclusion = std::move(conclusion);
}

void FakeGithub::complete_run(std::int64_t run_id, const std::string& conclusion) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->runs.find(run_id);
  if (it == state_->runs.end()) throw std::out_of_range("no run " + std::to_string(run_id));
  it->second.status = "completed";
  it->second.conclusion = conclusion;
  it->second.updated_at = iso8601(state_->now());
}

void FakeGithub::set_run_status(std::int64_t run_id, const std::string& status) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->runs.find(run_id);
  if (it == state_->runs.end()) throw std::out_of_range("no run " + std::to_string(run_id));
  it->second.status = status;
  it->second.updated_at = iso8601(state_->now());
}

std::int64_t FakeGithub::add_run(FakeRun run) {
  std::lock_guard lock(state_->mutex);
  run.id = state_->next_run_id++;
  if (run.created == TimePoint{}) run.created = state_->now();
  if (run.created_at.empty()) run.created_at = iso8601(run.created);
  if (run.updated_at.empty()) run.updated_at = run.created_at;
  if (run.event.empty()) run.event = "push";
  if (run.name.empty()) run.name = run.workflow;
  if (run.display_title.empty()) run.display_title = run.name;
  const auto id = run.id;
  state_->runs[id] = std::move(run);
  return id;
}

std::vector<FakeRun> FakeGithub::runs() const {
  std::lock_guard lock(state_->mutex);
  std::vector<FakeRun> out;
  for (const auto& [id, run] : state_->runs) out.push_back(run);
  return out;
}

std::optional<FakeRun> FakeGithub::run(std::int64_t run_id) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->runs.find(run_id);
  if (it == state_->runs.end()) return std::nullopt;
  return it->second;
}

std::vector<FakeDeployment> FakeGithub::deployments() const {
  std::lock_guard lock(state_->mutex);
  std::vector<FakeDeployment> out;
  for (const auto& [id, d] : state_->deployments) out.push_back(d);
  return out;
}

std::optional<FakeDeployment> FakeGithub::deployment(std::int64_t id) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->deployments.find(id);
  if (it == state_->deployments.end()) return std::nullopt;
  return it->second;
}

void FakeGithub::set_pending_contexts(const std::string& owner, const std::string& repo,
                                      std::vector<std::string> contexts) {
  std::lock_guard lock(state_->mutex);
  state_->pending_contexts[lower(owner) + "/" + lower(repo)] = std::move(contexts);
}

void FakeGithub::inject(FakeFault fault) {
  std::lock_guard lock(state_->mutex);
  if (fault.times > 0) state_->faults.push_back(std::move(fault));
}

void FakeGithub::clear_faults() {
  std::lock_guard lock(state_->mutex);
  state_->faults.clear();
}

void FakeGithub::exhaust_rate_limit(std::chrono::seconds reset_in) {
  std::lock_guard lock(state_->mutex);
  state_->used = state_->options.rate_limit;
  state_->reset_at =
      std::chrono::time_point_cast<std::chrono::seconds>(state_->now()) + reset_in;
}

int FakeGithub::rate_limit_remaining() const {
  std::lock_guard lock(state_->mutex);
  state_->refresh_window(state_->now());
  return std::max(0, state_->options.rate_limit - state_->used);
}

void FakeGithub::set_delay(std::chrono::milliseconds delay) {
  std::lock_guard lock(state_->mutex);
  state_->delay = delay;
}

std::vector<FakeCall> FakeGithub::calls() const {
  std::lock_guard lock(state_->mutex);
  return state_->calls;
}

std::size_t FakeGithub::count(const std::string& route) const {
  std::lock_guard lock(state_->mutex);
  return static_cast<std::size_t>(std::count_if(state_->calls.begin(), state_->calls.end(),
                                                [&](const FakeCall& c) { return c.route == route; }));
}

void FakeGithub::clear_calls() {
  std::lock_guard lock(state_->mutex);
  state_->calls.clear();
}

FakeGithubServer::FakeGithubServer(FakeGithub::Options options, FakeHttpServer::Options http)
    : github_(std::move(options)), server_(github_.handler(), std::move(http)) {
  github_.set_base_url(server_.base_url());
}

}  // namespace orgd::testing
