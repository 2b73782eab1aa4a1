#pragma once

// An in-memory Synadia Cloud control plane (cloud-apis.md §3) for tests: teams, systems,
// accounts, signing-key groups, NATS users, creds downloads and user revocations under
// /api/core/beta, with a bearer token check (401 without or with a wrong token), the documented
// statuses (201 on create, 204 on delete, 404 for unknown ids) and error bodies with no schema
// (a line of text, as nothing is documented). Lists are {items: [...]}, unpaginated.
//
// It is also a real NATS trust chain: an operator, each account an nkey whose JWT the operator
// signs (listing the account's signing keys and its revocations), each signing-key group an
// nkey that signs its users' JWTs. server_config() is an operator-mode nats-server config with
// the accounts preloaded, so the creds it hands out connect to a real server, and a revoked
// user's creds are refused by a server started with the config written after the revocation.
//
// Guesses (not in cloud-apis.md): GET /accounts/{id}/info answers {jetstream: {memory, storage,
// streams, consumers}}; GET /accounts/{id}/metrics the Go SDK's AccountMetrics gauges
// (nats_core_account_jetstream_storage_used, ...); an account's jwt_settings carry {limits:
// {mem_storage, disk_storage, streams, consumer, conn}}; a 429 (throttle_next) carries
// Retry-After.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/http_server.hpp"

namespace orgd::testing {

struct SynCall {
  std::string method, path;  // path below /api/core/beta
  std::string route;         // "POST /accounts/{accountId}/nats-users"; "" when no route
  std::string authorization;
  std::string body;
  int status = 0;
};

struct SynUser {
  std::string id, name, account_id, sk_group_id;
  std::string public_key, seed, jwt;
  std::int64_t issued_at = 0;
  std::optional<std::int64_t> expires_at;
  int creds_downloads = 0;
};

class FakeSynadia {
 public:
  explicit FakeSynadia(std::string token);

  // The whole API; path is the request's (starting /api/core/beta).
  FakeResponse handle(const FakeRequest& request);

  // Setup. Ids are returned.
  std::string add_team(const std::string& name);
  std::string add_system(const std::string& team_id, const std::string& name);
  // An account with one signing-key group named "Default".
  std::string add_account(const std::string& system_id, const std::string& name);
  std::string add_sk_group(const std::string& account_id, const std::string& name);
  void set_account_limits(const std::string& account_id, nlohmann::json limits);
  void set_account_usage(const std::string& account_id, nlohmann::json jetstream);

  // The next `count` requests are answered 429 with Retry-After: `retry_after_seconds`.
  void throttle_next(int count, int retry_after_seconds);
  void set_token(std::string token);

  // What happened.
  std::vector<SynCall> calls() const;
  std::size_t count(const std::string& route) const;
  std::vector<SynUser> users() const;
  std::optional<SynUser> user_named(const std::string& name) const;
  std::optional<SynUser> user(const std::string& id) const;
  std::map<std::string, std::int64_t> revocations(const std::string& account_id) const;
  std::optional<std::string> account_id(const std::string& name) const;

  // An operator-mode nats-server config (operator JWT, memory resolver, every account's JWT as
  // it is now: signing keys, revocations) to append to a server's config.
  std::string server_config() const;

 private:
  struct Team {
    std::string id, name;
  };
  struct System {
    std::string id, name, team_id;
  };
  struct SkGroup {
    std::string id, name, account_id, seed, public_key;
  };
  struct Account {
    std::string id, name, system_id, seed, public_key;
    nlohmann::json limits = nlohmann::json::object();
    nlohmann::json usage = nlohmann::json::object();
    std::map<std::string, std::int64_t> revocations;  // user public key -> before
  };

  FakeResponse route(const FakeRequest& request, const std::vector<std::string>& parts,
                     std::string& route_name);
  nlohmann::json account_view(const Account& account) const;
  nlohmann::json user_view(const SynUser& user) const;
  std::string account_jwt(const Account& account) const;
  std::string new_id(const char* prefix);

  mutable std::mutex mutex_;
  std::string token_;
  std::string operator_seed_;
  int next_id_ = 1;
  int throttled_ = 0;
  int retry_after_ = 1;
  std::map<std::string, Team> teams_;
  std::map<std::string, System> systems_;
  std::map<std::string, Account> accounts_;
  std::map<std::string, SkGroup> groups_;
  std::map<std::string, SynUser> users_;
  std::vector<SynCall> calls_;
};

class FakeSynadiaServer {
 public:
  explicit FakeSynadiaServer(std::string token);
  FakeSynadia& synadia() { return synadia_; }
  FakeHttpServer& http() { return server_; }
  // What api_url is set to: "http://127.0.0.1:<port>/api/core/beta".
  std::string base_url() const { return server_.base_url() + "/api/core/beta"; }

 private:
  FakeSynadia synadia_;
  FakeHttpServer server_;
};

// A creds file's text from a user JWT and its seed, as Synadia and nsc write it.
std::string creds_file_text(const std::string& jwt, const std::string& seed);

}  // namespace orgd::testing
