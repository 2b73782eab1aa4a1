#pragma once

// What the fake GitHub's areas (secrets, actions, deployments, app) share: its state, one
// request's context, the answer they build, and the helpers for GitHub's envelopes.

#include <sodium.h>

#include <array>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/fakes/fake_github.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::testing::github_fake {

using json = nlohmann::json;
using TimePoint = std::chrono::system_clock::time_point;

struct Reply {
  int status = 200;
  json body;
  bool no_body = false;  // 204, 202 without content
  std::vector<orgd::HttpHeader> headers;
};

// A request body that is not JSON: GitHub answers 400 "Problems parsing JSON".
struct BadJson {};

struct Ctx {
  const FakeRequest& request;
  std::map<std::string, std::string> params;  // {owner}, {repo}, … from the path
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::string api_version;  // the one answering: 2022-11-28 or 2026-03-10
  std::string base_url;     // http(s)://host:port
  TimePoint now;

  const std::string& param(const std::string& name) const { return params.at(name); }
  std::string query_value(const std::string& name) const;  // "" when absent
  json body() const;  // throws BadJson; {} for an empty body
};

struct ScopeData {
  std::array<unsigned char, crypto_box_PUBLICKEYBYTES> public_key{};
  std::array<unsigned char, crypto_box_SECRETKEYBYTES> secret_key{};
  std::string key_id;
  std::map<std::string, FakeSecret> secrets;  // by upper-cased name
};

struct Route {
  std::string method;
  std::string pattern;  // "/repos/{owner}/{repo}/actions/secrets/{secret_name}"
  std::function<Reply(FakeGithub::State&, Ctx&)> answer;
  bool needs_token = true;  // false: the route checks its own credentials (or needs none)
};

}  // namespace orgd::testing::github_fake

namespace orgd::testing {

struct FakeGithub::State {
  Options options;
  mutable std::mutex mutex;  // guards everything below
  std::string base_url;
  std::set<std::string> tokens;
  std::map<std::string, github_fake::TimePoint> installation_tokens;  // token → expiry

  // The App key pair, made on first use (RSA key generation is slow next to the rest).
  mutable std::string app_private_pem, app_public_pem, app_private_file;
  mutable std::unique_ptr<TempDir> app_dir;

  std::map<std::string, github_fake::ScopeData> scopes;  // by SecretScope::key()
  std::map<std::string, std::int64_t> repo_ids;          // "owner/repo" → id
  std::int64_t next_repo_id = 700100;
  std::int64_t next_key_id = 3380204578043523366;

  std::map<std::string, std::string> run_names;  // workflow file → run-name template
  bool return_run_details_supported = true;
  int complete_after_polls = 0;
  std::string auto_conclusion = "success";
  std::map<std::int64_t, FakeRun> runs;
  int hide_new_runs_for = 0;
  std::map<std::int64_t, int> hidden_runs;  // run → listings it is still left out of
  std::map<std::string, std::set<std::string>> workflows, refs;  // "owner/repo" → names
  std::int64_t next_run_id = 9100000001;

  std::map<std::int64_t, FakeDeployment> deployments;
  std::int64_t next_deployment_id = 1800000001;
  std::int64_t next_status_id = 2600000001;
  std::map<std::string, std::vector<std::string>> pending_contexts;  // "owner/repo" → contexts

  std::vector<FakeFault> faults;
  int used = 0;
  github_fake::TimePoint reset_at{};
  std::chrono::milliseconds delay{0};
  std::vector<FakeCall> calls;

  std::vector<github_fake::Route> routes;

  github_fake::TimePoint now() const;
  void ensure_app_key() const;
  github_fake::ScopeData& scope(const std::string& key);
  std::int64_t repo_id(const std::string& owner, const std::string& repo);
  void refresh_window(github_fake::TimePoint now);
};

namespace github_fake {

std::string iso8601(TimePoint t);
// "2026-12-02T05:00:00Z", "2026-12-02T05:00:00+01:00", "2026-12-02"; nullopt when malformed.
std::optional<TimePoint> parse_iso8601(const std::string& text);
std::string base64(std::string_view bytes);
std::optional<std::string> unbase64(std::string_view text);
std::string upper(std::string s);
std::string lower(std::string s);

Reply error(int status, const std::string& message,
            const std::string& documentation_url = "https://docs.github.com/rest");
// GitHub's schema check: `Invalid request.\n\n"<field>" wasn't supplied.` and the like.
Reply invalid_request(const std::string& detail);
// GitHub's model validation: {"message":"Validation Failed","errors":[{…}]}.
Reply validation_failed(const std::string& resource, const std::string& field,
                        const std::string& code, const std::string& message = "");
Reply not_found();
Reply created(json body);
Reply no_content(int status = 204);

// One page of `items` (per_page ≤ 100, default 30; page from 1) with GitHub's Link header;
// `wrap` makes the body from the page's items and the total (null: the bare array).
Reply paginate(const Ctx& ctx, const std::vector<json>& items,
               const std::function<json(json page, std::size_t total)>& wrap = nullptr);

void add_secret_routes(std::vector<Route>& routes);
void add_actions_routes(std::vector<Route>& routes);
void add_deployment_routes(std::vector<Route>& routes);
void add_app_routes(std::vector<Route>& routes);

// A run as GitHub's REST answers and webhook payloads show it.
json run_json(const FakeRun& run, const std::string& base_url);

// Whether a bearer credential is a configured PAT or a live installation token.
bool token_valid(const FakeGithub::State& state, const std::string& token, TimePoint now);

}  // namespace github_fake
}  // namespace orgd::testing
