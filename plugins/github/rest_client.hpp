#pragma once

// The GitHub REST calls of one provider instance (cloud-apis.md §1): the API root, the
// credential and X-GitHub-Api-Version on every request, one more try with a fresh credential
// after a 401 (an App token that expired early), answers that are not a success turned into
// Errors with their retry kind (github_error), Link pagination kept on the API's own host, and a
// count of the calls made (API calls per operation, in the benchmarks and tests).

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/net/http_transport.hpp"
#include "plugins/github/auth.hpp"
#include "plugins/github/github_settings.hpp"

namespace orgd::github {

class RestClient {
 public:
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;

  // The transport and the credential, made on first use (a missing token is the first call's
  // error, not a reason for orgd not to start).
  struct Client {
    std::shared_ptr<HttpTransport> transport;
    std::shared_ptr<GithubAuth> auth;
  };
  using ClientFactory = std::function<Result<Client>()>;

  RestClient(Settings settings, ClientFactory make_client, std::shared_ptr<const Clock> clock);

  // `path` from the API root ("/repos/acme/api/actions/secrets") or an absolute URL on the API's
  // host (a Link). Any status is a value; an error is no answer (or no credential).
  Result<HttpResponse> send(const std::string& method, const std::string& path,
                            std::string body = {}, Deadline deadline = {},
                            std::optional<bool> idempotent = {});
  // As send(), a status that is not 2xx as github_error(what, ...); the body as JSON (an empty
  // body as null, a body that is not JSON as an error).
  Result<nlohmann::json> call(const std::string& what, const std::string& method,
                              const std::string& path, std::string body = {},
                              Deadline deadline = {}, std::optional<bool> idempotent = {});
  // Every item of a paginated list (per_page=100, Link rel="next"): `key` names the array in
  // each page's object. Stops with an error past max_items (a runaway listing).
  Result<std::vector<nlohmann::json>> list(const std::string& what, const std::string& path,
                                           const std::string& key, Deadline deadline = {},
                                           std::size_t max_items = 100'000);

  // The transport and credential (made now if they were not yet).
  Result<Client> client();

  const Settings& settings() const { return settings_; }
  const Clock& clock() const { return *clock_; }
  // HTTP requests made so far (retries inside the transport not counted).
  std::uint64_t calls() const { return calls_.load(); }

 private:
  Settings settings_;
  ClientFactory make_client_;
  std::shared_ptr<const Clock> clock_;
  std::mutex mutex_;  // guards client_
  std::optional<Client> client_;
  std::atomic<std::uint64_t> calls_{0};
};

// The URL of rel="next" in a Link header; nullopt when there is none.
std::optional<std::string> next_link(std::string_view link_header);

// A path segment as GitHub takes it in a URL (a secret, workflow or environment name).
std::string path_segment(std::string_view text);

}  // namespace orgd::github
