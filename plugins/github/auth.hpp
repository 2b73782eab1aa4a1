#pragma once

// How the GitHub provider authenticates (cloud-apis.md §1.4): a personal access token from the
// environment, or a GitHub App installation whose short-lived tokens are minted with a signed
// JWT and refreshed before they expire. Either way callers get the Authorization header's value
// as a Secret and hand it to the transport, which writes it to the wire and nowhere else.

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/core/clock.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/core/secret_source.hpp"
#include "daemon/net/http_transport.hpp"
#include "plugins/github/github_settings.hpp"

namespace orgd::github {

class GithubAuth {
 public:
  virtual ~GithubAuth() = default;
  // The Authorization header's value ("Bearer ..."). Thread-safe.
  virtual Result<std::shared_ptr<const Secret>> authorization() = 0;
  // A call answered 401: the credential is no longer good; the next authorization() gets a
  // fresh one where that is possible (an App token), else returns the same.
  virtual void invalidate() = 0;
};

// A classic or fine-grained personal access token, read once from `token_env`.
class TokenAuth final : public GithubAuth {
 public:
  explicit TokenAuth(Secret token);
  // not_found (permanent) when the variable is unset or empty.
  static Result<std::unique_ptr<TokenAuth>> from_env(const SecretSource& source,
                                                     const std::string& token_env);

  Result<std::shared_ptr<const Secret>> authorization() override { return header_; }
  // A token from the environment cannot be renewed by orgd: the 401 stands.
  void invalidate() override {}

 private:
  std::shared_ptr<const Secret> header_;
};

// "Bearer <credential>" in sodium memory, with no copy left behind in a std::string.
Secret bearer(std::string_view credential);

// A GitHub App installation: RS256 JWTs (iat 60 s back, exp 9 minutes on, iss the App's id)
// exchanged at POST {api_url}/app/installations/{id}/access_tokens for an installation token,
// cached until less than kRefreshBefore remains or invalidate() is called. A refresh that fails
// while the cached token has not expired yet returns that token (and is tried again next call).
// Tokens may be of any length (GitHub's newer ones are ~520 characters) and are never parsed.
class AppAuth final : public GithubAuth {
 public:
  struct Options {
    std::string api_url;  // no trailing slash
    std::string app_id;   // client ID or application ID: the JWT's iss
    std::string installation_id;
    std::string api_version = "2022-11-28";
  };

  static constexpr std::chrono::seconds kIssuedAtSkew{60};
  static constexpr std::chrono::seconds kJwtLifetime{9 * 60};
  static constexpr std::chrono::minutes kRefreshBefore{5};

  // invalid_argument (permanent) when the key is not a PEM RSA private key; the message never
  // quotes the key.
  static Result<std::unique_ptr<AppAuth>> create(Options options, Secret private_key_pem,
                                                 std::shared_ptr<HttpTransport> transport,
                                                 std::shared_ptr<const Clock> clock);

  Result<std::shared_ptr<const Secret>> authorization() override;
  void invalidate() override;

  // A fresh JWT for the App (header.payload.signature, base64url without padding).
  Result<Secret> make_jwt() const;
  // Installation tokens fetched so far (refreshes included).
  int tokens_fetched() const;

 private:
  AppAuth(Options options, Secret private_key_pem, std::shared_ptr<HttpTransport> transport,
          std::shared_ptr<const Clock> clock);
  Result<Ok> fetch_locked();

  const Options options_;
  const Secret private_key_pem_;
  const std::shared_ptr<HttpTransport> transport_;
  const std::shared_ptr<const Clock> clock_;

  mutable std::mutex mutex_;  // guards everything below; held while a token is fetched
  std::shared_ptr<const Secret> header_;
  Clock::time_point expires_at_{};
  bool invalidated_ = false;
  int fetched_ = 0;
};

// Reads an RFC 3339 UTC time as GitHub writes it ("2026-07-11T22:14:10Z", fractions and
// "+00:00" accepted); nullopt otherwise.
std::optional<Clock::time_point> parse_github_time(std::string_view text);

// The Error for a GitHub API answer that is not a success: 401/403/404/422 permanent with
// GitHub's message, 403/429 rate limits as Retry::rate_limited (retry-after, else the reset,
// else a minute, as GitHub asks), 5xx retryable. `what` starts the message ("creating an
// installation token").
Error github_error(std::string_view what, const HttpResponse& response, Clock::time_point now);

// What the provider's HTTP client is built with: GitHub's rate-limit headers, the provider's
// name on metrics and logs, its extra CA.
HttpClientOptions http_client_options(const Settings& settings);

// The auth the settings name: TokenAuth from token_env, or AppAuth with the key read from
// private_key_file through `source` (so into a Secret, never a std::string). Errors are
// permanent and name the variable or the file, never a value.
Result<std::unique_ptr<GithubAuth>> make_auth(const Settings& settings, const SecretSource& source,
                                              std::shared_ptr<HttpTransport> transport,
                                              std::shared_ptr<const Clock> clock);

}  // namespace orgd::github
