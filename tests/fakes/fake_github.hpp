#pragma once

// An in-memory GitHub REST API (cloud-apis.md §1) for tests: Actions secrets (repository,
// environment, organization), workflow dispatches and runs, Deployments and their statuses, App
// installation tokens and /rate_limit, answered with GitHub's status codes, error bodies, Link
// pagination and rate-limit headers. It opens the sealed boxes it is sent with its own private
// keys and records every call, so a test checks what a client really sent. handle() is the whole
// API, callable without a socket; FakeGithubServer puts it behind a FakeHttpServer (plain or TLS).
// docs/testing-fakes.md lists what it covers and where it had to guess.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/http_server.hpp"

namespace orgd::testing {

// Where secrets live: one key pair and one set of secrets per scope.
struct SecretScope {
  enum class Kind { repository, environment, organization };
  Kind kind = Kind::repository;
  std::string owner;        // the repository's owner, or the organization
  std::string repo;         // repository and environment scopes
  std::string environment;  // environment scope

  static SecretScope repository(std::string owner, std::string repo);
  static SecretScope env(std::string owner, std::string repo, std::string environment);
  static SecretScope org(std::string org);
  std::string key() const;  // "repo:o/r", "env:o/r/e", "org:o"
};

struct FakeCall {
  std::string method, path, query;
  std::string route;  // "PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}", "" if none
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  int status = 0;
  std::string header(std::string_view name) const;
};

struct FakeSecret {
  std::string name;  // upper-cased, as GitHub stores it
  std::string value;  // the opened clear value
  std::string created_at, updated_at;
  std::string visibility;  // organization secrets: all | private | selected
  std::vector<std::int64_t> selected_repository_ids;
};

struct FakeRun {
  std::int64_t id = 0;
  std::string owner, repo, workflow;  // workflow: its file name, e.g. "deploy.yml"
  std::string ref, name, display_title, event;
  nlohmann::json inputs = nlohmann::json::object();
  std::string status = "queued";  // queued | in_progress | completed
  std::string conclusion;         // "" until completed
  std::string created_at, updated_at;
  std::chrono::system_clock::time_point created;
  int polls = 0;  // times the run was read (GET of the run, or listed)
};

struct FakeDeploymentStatus {
  std::int64_t id = 0;
  std::string state, description, environment, log_url, target_url, environment_url,
      created_at;
};

struct FakeDeployment {
  std::int64_t id = 0;
  std::string owner, repo, ref, sha, task, environment, description, created_at;
  bool auto_merge = true;
  std::optional<std::vector<std::string>> required_contexts;  // nullopt: left out (check all)
  nlohmann::json payload = nlohmann::json::object();
  bool transient_environment = false, production_environment = false;
  std::vector<FakeDeploymentStatus> statuses;  // oldest first
};

// A failure the fake gives instead of the real answer, for the next `times` matching requests.
struct FakeFault {
  enum class Kind {
    server_error,       // `status` (5xx), GitHub's error body
    too_many_requests,  // 429 with retry-after
    secondary_limit,    // 403 secondary rate limit, retry-after only when set
    slow,               // the real answer, `delay` late
    drop,               // the connection closed without an answer
  };
  Kind kind = Kind::server_error;
  int times = 1;
  int status = 502;
  std::optional<std::chrono::seconds> retry_after;
  std::chrono::milliseconds delay{0};
  std::string route;  // only requests of this route (FakeCall::route); "" any

  static FakeFault server_errors(int times, int status = 502);
  static FakeFault too_many_requests(std::chrono::seconds retry_after, int times = 1);
  static FakeFault secondary_limit(std::optional<std::chrono::seconds> retry_after,
                                   int times = 1);
  static FakeFault slow(std::chrono::milliseconds delay, int times = 1);
  static FakeFault dropped(int times = 1);
  FakeFault on(std::string route_name) &&;
};

// A webhook delivery as GitHub sends it: X-GitHub-Event, X-GitHub-Delivery, X-GitHub-Hook-ID,
// X-GitHub-Hook-Installation-Target-Type/-ID, User-Agent GitHub-Hookshot/…, Content-Type, and
// X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the exact body with the hook's secret>.
// A redelivery is the same delivery id sent again.
struct FakeWebhookDelivery {
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  std::string header(std::string_view name) const;
};
FakeWebhookDelivery webhook_delivery(const std::string& event, const nlohmann::json& payload,
                                     std::string_view secret, const std::string& delivery_id,
                                     std::int64_t hook_id = 1);
// "sha256=" + lowercase hex HMAC-SHA256(secret, body).
std::string hub_signature_256(std::string_view secret, std::string_view body);

class FakeGithub {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  struct Options {
    Clock clock;  // unset: the system clock
    std::int64_t app_id = 424242;
    std::string app_client_id = "Iv23liFakeOrgdApp01";
    std::int64_t installation_id = 5151;
    std::chrono::seconds installation_token_lifetime{3600};
    int rate_limit = 5000;  // per hour, shared by every credential
  };

  explicit FakeGithub(Options options);
  FakeGithub();
  ~FakeGithub();
  FakeGithub(const FakeGithub&) = delete;
  FakeGithub& operator=(const FakeGithub&) = delete;

  // The whole API: thread-safe, callable from several connections at once.
  FakeResponse handle(const FakeRequest& request);
  FakeHttpServer::Handler handler();
  // Absolute URLs in answers (Link, url, run_url) start with this; unset: http://<Host header>.
  void set_base_url(std::string base_url);

  // Credentials. A PAT is accepted as "Bearer <t>" or "token <t>".
  void add_token(std::string token);
  void revoke_token(const std::string& token);
  std::int64_t app_id() const;
  std::string app_client_id() const;
  std::int64_t installation_id() const;
  // The App's RSA key pair, made on first use; the private key PEM file is for orgd's config.
  std::string app_private_key_pem() const;
  std::string app_private_key_file() const;
  std::string app_public_key_pem() const;
  std::vector<std::string> issued_installation_tokens() const;
  void expire_installation_tokens();

  // Actions secrets.
  std::optional<std::string> secret_value(const SecretScope& scope, const std::string& name) const;
  std::optional<FakeSecret> secret(const SecretScope& scope, const std::string& name) const;
  std::vector<std::string> secret_names(const SecretScope& scope) const;
  // A new key pair for the scope; secrets sealed to the old key_id are then refused.
  void rotate_public_key(const SecretScope& scope);
  std::string public_key_id(const SecretScope& scope) const;
  std::string public_key(const SecretScope& scope) const;  // raw 32 bytes
  // Repository ids, given on first sight of a repository (selected_repository_ids use them).
  std::int64_t repository_id(const std::string& owner, const std::string& repo);

  // Workflows. The run name comes from the workflow's `run-name:`; ${{ inputs.<name> }} is
  // replaced by the dispatch input. Unset: the workflow's name (its file name without .yml).
  void set_run_name(const std::string& workflow, std::string run_name_template);
  // Older GHES: `return_run_details` is not a permitted key (422).
  void set_return_run_details_supported(bool supported);
  // Real runs show up in lists a little after the dispatch: a new run is left out of the next
  // `lists` run listings of its repository (GET of the run by id still finds it).
  void set_new_runs_hidden_for_lists(int lists);
  // Once set for a repository, only these workflows exist there (404 for others) and only
  // these refs (422 "No ref found for: …"); unset, every name exists.
  void set_workflows(const std::string& owner, const std::string& repo,
                     std::vector<std::string> workflows);
  void set_refs(const std::string& owner, const std::string& repo, std::vector<std::string> refs);
  // Runs complete on their own once read `polls` times, with `conclusion`.
  void complete_runs_after_polls(int polls, std::string conclusion);
  void complete_run(std::int64_t run_id, const std::string& conclusion);
  void set_run_status(std::int64_t run_id, const std::string& status);
  // A run not made by a dispatch (another push, someone else's dispatch), to test matching.
  std::int64_t add_run(FakeRun run);
  std::vector<FakeRun> runs() const;
  std::optional<FakeRun> run(std::int64_t run_id) const;
  // The `workflow_run` webhook payload GitHub sends for the run as it is now: action
  // "completed" once completed, "in_progress" or "requested" before.
  nlohmann::json workflow_run_event(std::int64_t run_id) const;

  // Deployments.
  std::vector<FakeDeployment> deployments() const;
  std::optional<FakeDeployment> deployment(std::int64_t id) const;
  // Commit status contexts still pending on a repository: a deployment that requires them (all,
  // when required_contexts is left out) is refused with 409 as GitHub does.
  void set_pending_contexts(const std::string& owner, const std::string& repo,
                            std::vector<std::string> contexts);

  // Rate limits and failures.
  void inject(FakeFault fault);
  void clear_faults();
  // The primary limit used up until `reset_in` from now (403, x-ratelimit-remaining: 0).
  void exhaust_rate_limit(std::chrono::seconds reset_in);
  int rate_limit_remaining() const;
  // Every answer held this long (on top of a `slow` fault).
  void set_delay(std::chrono::milliseconds delay);

  // What was called.
  std::vector<FakeCall> calls() const;
  std::size_t count(const std::string& route) const;
  void clear_calls();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// FakeGithub behind a loopback FakeHttpServer, with the base URL set to the server's.
class FakeGithubServer {
 public:
  explicit FakeGithubServer(FakeGithub::Options options = {}, FakeHttpServer::Options http = {});
  FakeGithub& github() { return github_; }
  FakeHttpServer& http() { return server_; }
  std::string base_url() const { return server_.base_url(); }

 private:
  FakeGithub github_;
  FakeHttpServer server_;
};

}  // namespace orgd::testing
