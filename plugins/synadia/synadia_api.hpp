#pragma once

// The Synadia Cloud control-plane calls of one provider instance (cloud-apis.md §3): the API
// root (…/api/core/beta) and the bearer token on every request; JSON bodies, lists as
// {items: [...]} (no pagination in the spec), a user's creds as text/plain. 4xx answers have no
// documented body: an error carries the status and the body's text, trimmed and bounded. No
// rate limits are documented: the HTTP client under it honours a 429's Retry-After (sent again
// once the wait is over); a 429 it gives back is a rate_limited error. The system, account and
// signing-key group named in the settings are resolved to ids once and kept.

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
#include "daemon/core/secret.hpp"
#include "daemon/net/http_transport.hpp"
#include "daemon/plugin/provider.hpp"
#include "plugins/synadia/synadia_settings.hpp"

namespace orgd::synadia {

// A NATS user as the control plane shows it (NatsUserViewResponse).
struct NatsUser {
  std::string id;
  std::string name;
  std::string user_public_key;
  std::string jwt;
  std::string account_id;
  std::string sk_group_id;
  // The JWT's `exp` (none: it never expires).
  std::optional<Clock::time_point> expires_at;
};

// The ids the settings' names stand for.
struct ResolvedIds {
  std::string system_id;
  std::string account_id;
  std::string account_name;
  std::string sk_group_id;
  bool account_created = false;  // this resolution created the account (create_account)
};

class SynadiaApi {
 public:
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;
  using TransportFactory = std::function<Result<std::shared_ptr<HttpTransport>>()>;
  using TokenGetter = std::function<Result<std::shared_ptr<const Secret>>()>;

  SynadiaApi(Settings settings, TransportFactory make_transport, TokenGetter token,
             std::shared_ptr<const Clock> clock);

  struct Request {
    std::string method = "GET";
    std::string path;  // from the API root: "/systems/<id>"
    std::string body;  // JSON when set
    std::string accept = "application/json";
    Deadline deadline;
    std::optional<bool> idempotent;
  };

  // The answer as it came; an error is no answer.
  Result<HttpResponse> send(const Request& request);
  // The answer of a 2xx; any other status as status_error().
  Result<HttpResponse> call(const std::string& what, const Request& request);
  // The answer of a 2xx as JSON (an object); an error when it is not.
  Result<nlohmann::json> call_json(const std::string& what, const Request& request);
  // The items of a {items: [...]} answer.
  Result<std::vector<nlohmann::json>> list(const std::string& what, const std::string& path,
                                           Deadline deadline = {});

  Result<nlohmann::json> get_system(const std::string& system_id, Deadline deadline = {});
  Result<std::vector<nlohmann::json>> list_teams(Deadline deadline = {});
  Result<std::vector<nlohmann::json>> list_systems(const std::string& team_id,
                                                   Deadline deadline = {});
  Result<std::vector<nlohmann::json>> list_accounts(const std::string& system_id,
                                                    Deadline deadline = {});
  Result<nlohmann::json> create_account(const std::string& system_id, const std::string& name,
                                        Deadline deadline = {});
  Result<nlohmann::json> get_account(const std::string& account_id, Deadline deadline = {});
  Result<nlohmann::json> account_info(const std::string& account_id, Deadline deadline = {});
  // GET /accounts/{id}/metrics: the account's usage (nats_core_account_* gauges).
  Result<nlohmann::json> account_metrics(const std::string& account_id, Deadline deadline = {});
  Result<std::vector<nlohmann::json>> list_sk_groups(const std::string& account_id,
                                                     Deadline deadline = {});
  Result<NatsUser> create_user(const std::string& account_id, const std::string& name,
                               const std::string& sk_group_id, Deadline deadline = {});
  Result<NatsUser> get_user(const std::string& user_id, Deadline deadline = {});
  Result<std::vector<NatsUser>> list_users(const std::string& account_id, Deadline deadline = {});
  // The user's .creds file (JWT and nkey seed).
  Result<Secret> download_creds(const std::string& user_id, Deadline deadline = {});
  // not_found when there is no such user.
  Result<Ok> delete_user(const std::string& user_id, Deadline deadline = {});
  // Revokes every JWT of the user's nkey issued before now (before: 0).
  Result<Ok> revoke_user(const std::string& account_id, const std::string& user_public_key,
                         Deadline deadline = {});

  // The settings' system, account and signing-key group as ids: resolved on first use (the
  // account created when missing and create_account), then kept.
  Result<ResolvedIds> resolve(Deadline deadline = {});
  // Drops the kept ids (the account was deleted behind orgd's back).
  void forget();

  Result<std::shared_ptr<HttpTransport>> transport();
  const Settings& settings() const { return settings_; }
  const Clock& clock() const { return *clock_; }
  std::uint64_t calls() const { return calls_.load(); }

 private:
  Result<ResolvedIds> resolve_now(Deadline deadline);

  Settings settings_;
  TransportFactory make_transport_;
  TokenGetter token_;
  std::shared_ptr<const Clock> clock_;
  std::mutex mutex_;  // guards transport_
  std::shared_ptr<HttpTransport> transport_;
  std::mutex resolve_mutex_;  // guards ids_; held while resolving (one resolution at a time)
  std::optional<ResolvedIds> ids_;
  std::atomic<std::uint64_t> calls_{0};
};

// The Error of a non-2xx answer: "<what>: Synadia answered <status>[: <body text>]". 429 is
// rate_limited (Retry-After, else 60 s); 5xx retryable; 404 not_found, 409 conflict, other 4xx
// invalid_argument, all permanent.
Error status_error(const std::string& what, const HttpResponse& response);

// A user from a NatsUserViewResponse; an error when it has no id.
Result<NatsUser> read_user(const nlohmann::json& json);
// The `exp` of a NATS JWT (none when absent or unreadable).
std::optional<Clock::time_point> jwt_expiry(std::string_view jwt);
// The JWT and the seed of a .creds file; empty strings when it is not one.
struct CredsParts {
  std::string jwt;
  std::string seed;
};
CredsParts split_creds(std::string_view creds);

// The account's JetStream limits (its jwt_settings: the account JWT's limits) and usage (its
// metrics, or a JetStream account info), read tolerantly: absent fields are left out.
// cloud-apis.md does not document the shapes (unconfirmed).
std::vector<ProviderQuota> read_quotas(const nlohmann::json& account, const nlohmann::json& usage);

std::string path_segment(std::string_view text);
std::string string_field(const nlohmann::json& json, const char* key);

}  // namespace orgd::synadia
