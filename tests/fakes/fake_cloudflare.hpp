#pragma once

// An in-memory Cloudflare v4 API (cloud-apis.md §2) for tests: token verify (user and account
// tokens), Workers versions (the multipart upload parsed and checked: metadata first, its
// main_module among the modules, the content types Cloudflare takes), deployments (one or two
// versions whose percentages sum to 100, the latest first, 10220 when an older version's
// secrets differ from the current ones unless ?force=true), Worker secrets (one page; refused
// while the latest version is not fully deployed; a change creates a version and deploys it at
// 100%), Containers applications and rollouts (progressing, then completed — or reverted —
// after a number of reads), every answer in Cloudflare's envelope with `Ratelimit` and
// `Ratelimit-Policy` headers, a request budget per window whose excess is answered 429 with
// Retry-After and blocks every call for the block time, `success: false` at HTTP 200 on
// demand, and a record of every call. handle() is the whole API, callable without a socket;
// FakeCloudflareServer puts it behind a FakeHttpServer. docs/testing-fakes.md says what it
// covers and where it guesses.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/http_server.hpp"

namespace orgd::testing {

struct CfCall {
  std::string method, path, query;
  // "POST /accounts/{account_id}/workers/scripts/{script_name}/versions"; "" when no route
  std::string route;
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  int status = 0;
  std::string header(std::string_view name) const;
};

struct CfModule {
  std::string name, content_type, body;
};

struct CfVersion {
  std::string id;
  int number = 0;
  std::string main_module, compatibility_date;
  nlohmann::json metadata = nlohmann::json::object();  // the upload's metadata part as sent
  nlohmann::json annotations = nlohmann::json::object();
  std::vector<CfModule> modules;
  std::map<std::string, std::string> secrets;  // the version's secret_text bindings (clear)
  std::string source;  // "api" (an upload), "secret" (a secret change), "initial"
};

struct CfDeployment {
  std::string id;
  std::vector<std::pair<std::string, double>> versions;  // version id, percentage
  nlohmann::json annotations = nlohmann::json::object();
  bool forced = false;
};

struct CfWorker {
  std::string name;
  std::vector<CfVersion> versions;        // oldest first
  std::vector<CfDeployment> deployments;  // oldest first
};

struct CfApplication {
  std::string id, name, image;
  std::string active_rollout;  // "" when none
};

struct CfRollout {
  std::string id, application, description, strategy, kind, image, previous_image;
  nlohmann::json body;  // as sent
  std::string status = "progressing";  // progressing | completed | reverted | replaced
  int reads = 0;
};

class FakeCloudflare {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  struct Options {
    Clock clock;  // unset: the system clock
    std::string account_id = "0123456789abcdef0123456789abcdef";
    int rate_limit = 1200;  // requests per window, every token together
    std::chrono::seconds rate_window{300};
    std::chrono::seconds rate_block{300};  // how long a 429 blocks every call
    int rollout_reads = 2;  // reads of a rollout before it ends
  };

  explicit FakeCloudflare(Options options);
  FakeCloudflare();
  ~FakeCloudflare();
  FakeCloudflare(const FakeCloudflare&) = delete;
  FakeCloudflare& operator=(const FakeCloudflare&) = delete;

  FakeResponse handle(const FakeRequest& request);
  FakeHttpServer::Handler handler();
  const std::string& account_id() const;

  // Tokens: an account token verifies at /accounts/{id}/tokens/verify only, a user token at
  // /user/tokens/verify only. `status`: active | disabled | expired (only active ones may call).
  void add_token(std::string token, bool account = false, std::string status = "active",
                 std::string expires_on = {});
  std::string token_id(const std::string& token) const;

  // Workers. A Worker exists once added (its first upload is a script upload or wrangler deploy
  // in real life): with one version deployed at 100%, holding `secrets`.
  void add_worker(const std::string& name, std::map<std::string, std::string> secrets = {});
  std::optional<CfWorker> worker(const std::string& name) const;
  // A version uploaded beside orgd (wrangler versions upload, a dashboard save): the latest
  // version, like the one before with its secrets, not deployed.
  std::string add_version(const std::string& name);
  // A deployment made beside orgd (wrangler versions deploy): version id and percentage each.
  void add_deployment(const std::string& name, std::vector<std::pair<std::string, double>> versions);
  // The secrets of the Worker's latest version (what GET …/secrets lists).
  std::map<std::string, std::string> secrets(const std::string& name) const;

  // Containers.
  void add_application(const std::string& id, const std::string& image);
  std::optional<CfApplication> application(const std::string& id) const;
  std::vector<CfRollout> rollouts() const;
  // Rollouts end reverted instead of completed (their health checks failed).
  void set_rollouts_revert(bool revert);
  // GET …/rollouts/{id} answered 404 (the endpoint is not public in the reference): the rollout
  // is then seen through the application (its active_rollout_id and image).
  void set_rollout_get_supported(bool supported);

  // Failures: the next `times` requests of `route` ("" any) answered HTTP 200 with
  // {success: false, errors: [{code: 10013, ...}]}.
  void fail_with_success_false(int times, std::string route = {});
  // Requests left in this window; the budget starts anew when the window ends.
  void set_rate_limit_remaining(int remaining);

  // R2's bucket API, POST /accounts/{id}/r2/buckets (cloud-apis.md §2.6): `create` keeps the
  // buckets and says whether the name was new (connect_r2() in fake_s3.hpp hands it to the fake
  // S3). Without it the fake keeps the names itself. An existing bucket is answered 409 with
  // code 10004, an invalid name 400 with 10005.
  using R2BucketCreate =
      std::function<bool(const std::string& name, const std::string& jurisdiction)>;
  void set_r2_buckets(R2BucketCreate create);
  // The value of the active token with this id (the fake S3 derives its secret key from it).
  std::optional<std::string> token_by_id(const std::string& id) const;

  std::vector<CfCall> calls() const;
  std::size_t count(const std::string& route) const;
  void clear_calls();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// FakeCloudflare behind a loopback FakeHttpServer; base_url() is the API root
// (http://127.0.0.1:<port>/client/v4).
class FakeCloudflareServer {
 public:
  explicit FakeCloudflareServer(FakeCloudflare::Options options = {},
                                FakeHttpServer::Options http = {});
  FakeCloudflare& cloudflare() { return cloudflare_; }
  FakeHttpServer& http() { return server_; }
  std::string base_url() const { return server_.base_url() + "/client/v4"; }

 private:
  FakeCloudflare cloudflare_;
  FakeHttpServer server_;
};

// The parts of a multipart/form-data body (the fake's parser, also for unit tests):
// nullopt when the body is not well formed for `content_type`'s boundary.
struct CfFormPart {
  std::string name, filename, content_type, body;
};
std::optional<std::vector<CfFormPart>> parse_multipart(const std::string& content_type,
                                                       const std::string& body);

}  // namespace orgd::testing
