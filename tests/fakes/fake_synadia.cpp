#include "tests/fakes/fake_synadia.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <array>
#include <chrono>
#include <stdexcept>

#include "daemon/bus/nkeys.hpp"

namespace orgd::testing {

namespace {

using json = nlohmann::json;
using nkeys::KeyType;

constexpr const char* kRoot = "/api/core/beta";

std::string new_seed(KeyType type) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialized");
  std::array<unsigned char, nkeys::kEd25519SeedSize> raw{};
  randombytes_buf(raw.data(), raw.size());
  std::string seed = nkeys::encode_seed(type, raw);
  sodium_memzero(raw.data(), raw.size());
  return seed;
}

std::string base64url(const unsigned char* data, std::size_t size) {
  constexpr int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_encoded_len(size, variant), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, variant);
  out.resize(out.find('\0'));
  return out;
}

std::string base64url(const std::string& text) {
  return base64url(reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A signed NATS JWT (ed25519-nkey), the jti the sha256 of the claims with an empty jti.
std::string make_jwt(const std::string& issuer_seed, const std::string& subject,
                     const std::string& name, json nats, std::int64_t iat,
                     std::optional<std::int64_t> exp = std::nullopt) {
  auto claims = [&](const std::string& jti) {
    json c = {{"jti", jti},
              {"iat", iat},
              {"iss", nkeys::public_key_from_seed(issuer_seed)},
              {"name", name},
              {"sub", subject},
              {"nats", nats}};
    if (exp) c["exp"] = *exp;
    return c.dump();
  };
  const std::string unsigned_claims = claims("");
  std::array<unsigned char, crypto_hash_sha256_BYTES> hash{};
  crypto_hash_sha256(hash.data(), reinterpret_cast<const unsigned char*>(unsigned_claims.data()),
                     unsigned_claims.size());
  const std::string jti = nkeys::base32_encode(hash);
  const std::string signing_input =
      base64url(std::string(R"({"typ":"JWT","alg":"ed25519-nkey"})")) + "." +
      base64url(claims(jti));
  const std::vector<unsigned char> sig = nkeys::sign(issuer_seed, signing_input);
  return signing_input + "." + base64url(sig.data(), sig.size());
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

FakeResponse text(int status, std::string body) {
  FakeResponse r;
  r.status = status;
  r.headers = {{"Content-Type", "text/plain; charset=utf-8"}};
  r.body = std::move(body);
  return r;
}

FakeResponse answer(int status, const json& body) {
  FakeResponse r;
  r.status = status;
  r.headers = {{"Content-Type", "application/json"}};
  r.body = body.dump();
  return r;
}

FakeResponse no_content() {
  FakeResponse r;
  r.status = 204;
  return r;
}

json items(json list) { return json{{"items", std::move(list)}}; }

}  // namespace

std::string creds_file_text(const std::string& jwt, const std::string& seed) {
  return "-----BEGIN NATS USER JWT-----\n" + jwt +
         "\n------END NATS USER JWT------\n\n"
         "************************* IMPORTANT *************************\n"
         "NKEY Seed printed below can be used to sign and prove identity.\n"
         "NKEYs are sensitive and should be treated as secrets.\n\n"
         "-----BEGIN USER NKEY SEED-----\n" +
         seed + "\n------END USER NKEY SEED------\n\n"
         "*************************************************************\n";
}

FakeSynadia::FakeSynadia(std::string token)
    : token_(std::move(token)), operator_seed_(new_seed(KeyType::operator_)) {}

std::string FakeSynadia::new_id(const char* prefix) {
  return fmt::format("{}{:04d}", prefix, next_id_++);
}

std::string FakeSynadia::add_team(const std::string& name) {
  std::lock_guard lock(mutex_);
  Team t{new_id("tm"), name};
  teams_[t.id] = t;
  return t.id;
}

std::string FakeSynadia::add_system(const std::string& team_id, const std::string& name) {
  std::lock_guard lock(mutex_);
  System s{new_id("sys"), name, team_id};
  systems_[s.id] = s;
  return s.id;
}

std::string FakeSynadia::add_account(const std::string& system_id, const std::string& name) {
  std::string id;
  {
    std::lock_guard lock(mutex_);
    Account a;
    a.id = new_id("acc");
    a.name = name;
    a.system_id = system_id;
    a.seed = new_seed(KeyType::account);
    a.public_key = nkeys::public_key_from_seed(a.seed);
    id = a.id;
    accounts_[a.id] = std::move(a);
  }
  add_sk_group(id, "Default");
  return id;
}

std::string FakeSynadia::add_sk_group(const std::string& account_id, const std::string& name) {
  std::lock_guard lock(mutex_);
  SkGroup g;
  g.id = new_id("skg");
  g.name = name;
  g.account_id = account_id;
  g.seed = new_seed(KeyType::account);
  g.public_key = nkeys::public_key_from_seed(g.seed);
  groups_[g.id] = g;
  return g.id;
}

void FakeSynadia::set_account_limits(const std::string& account_id, json limits) {
  std::lock_guard lock(mutex_);
  accounts_.at(account_id).limits = std::move(limits);
}

void FakeSynadia::set_account_usage(const std::string& account_id, json jetstream) {
  std::lock_guard lock(mutex_);
  accounts_.at(account_id).usage = std::move(jetstream);
}

void FakeSynadia::throttle_next(int count, int retry_after_seconds) {
  std::lock_guard lock(mutex_);
  throttled_ = count;
  retry_after_ = retry_after_seconds;
}

void FakeSynadia::set_token(std::string token) {
  std::lock_guard lock(mutex_);
  token_ = std::move(token);
}

std::vector<SynCall> FakeSynadia::calls() const {
  std::lock_guard lock(mutex_);
  return calls_;
}

std::size_t FakeSynadia::count(const std::string& route) const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& c : calls_) n += c.route == route ? 1 : 0;
  return n;
}

std::vector<SynUser> FakeSynadia::users() const {
  std::lock_guard lock(mutex_);
  std::vector<SynUser> out;
  for (const auto& [id, u] : users_) out.push_back(u);
  return out;
}

std::optional<SynUser> FakeSynadia::user_named(const std::string& name) const {
  std::lock_guard lock(mutex_);
  for (const auto& [id, u] : users_) {
    if (u.name == name) return u;
  }
  return std::nullopt;
}

std::optional<SynUser> FakeSynadia::user(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto it = users_.find(id);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

std::map<std::string, std::int64_t> FakeSynadia::revocations(const std::string& account_id) const {
  std::lock_guard lock(mutex_);
  const auto it = accounts_.find(account_id);
  return it == accounts_.end() ? std::map<std::string, std::int64_t>{} : it->second.revocations;
}

std::optional<std::string> FakeSynadia::account_id(const std::string& name) const {
  std::lock_guard lock(mutex_);
  for (const auto& [id, a] : accounts_) {
    if (a.name == name) return id;
  }
  return std::nullopt;
}

std::string FakeSynadia::account_jwt(const Account& a) const {
  json signing = json::array();
  for (const auto& [id, g] : groups_) {
    if (g.account_id == a.id) signing.push_back(g.public_key);
  }
  json nats = {{"type", "account"},
               {"version", 2},
               {"signing_keys", signing},
               {"limits",
                {{"subs", -1},
                 {"data", -1},
                 {"payload", -1},
                 {"imports", -1},
                 {"exports", -1},
                 {"wildcards", true},
                 {"conn", -1},
                 {"leaf", -1}}}};
  if (!a.revocations.empty()) nats["revocations"] = a.revocations;
  return make_jwt(operator_seed_, a.public_key, a.name, nats, unix_now());
}

std::string FakeSynadia::server_config() const {
  std::lock_guard lock(mutex_);
  const std::string op = make_jwt(
      operator_seed_, nkeys::public_key_from_seed(operator_seed_), "fake-synadia-operator",
      json{{"type", "operator"}, {"version", 2}}, unix_now());
  std::string preload;
  for (const auto& [id, a] : accounts_) {
    preload += "  " + a.public_key + ": \"" + account_jwt(a) + "\"\n";
  }
  return "operator: \"" + op + "\"\nresolver: MEMORY\nresolver_preload: {\n" + preload + "}\n";
}

json FakeSynadia::account_view(const Account& a) const {
  json limits = a.limits;
  return json{{"id", a.id},
              {"name", a.name},
              {"account_public_key", a.public_key},
              {"system", {{"id", a.system_id}}},
              {"jwt_settings", {{"limits", limits}}},
              {"created", "2026-01-01T00:00:00Z"}};
}

json FakeSynadia::user_view(const SynUser& u) const {
  json view = {{"id", u.id},
               {"name", u.name},
               {"user_public_key", u.public_key},
               {"jwt", u.jwt},
               {"claims", json::object()},
               {"account", {{"id", u.account_id}}},
               {"sk_group_id", u.sk_group_id},
               {"jwt_expires_in_secs",
                u.expires_at ? *u.expires_at - u.issued_at : std::int64_t{0}},
               {"created", "2026-01-01T00:00:00Z"}};
  return view;
}

FakeResponse FakeSynadia::handle(const FakeRequest& request) {
  std::string route_name;
  FakeResponse response;
  {
    std::lock_guard lock(mutex_);
    SynCall call{request.method, request.path, "", request.header("authorization"), request.body,
                 0};
    const std::string root = kRoot;
    if (request.path.rfind(root, 0) != 0) {
      response = text(404, "404 page not found");
    } else if (throttled_ > 0) {
      --throttled_;
      response = text(429, "too many requests");
      response.headers.push_back({"Retry-After", std::to_string(retry_after_)});
    } else if (call.authorization != "Bearer " + token_) {
      response = text(401, "unauthorized");
    } else {
      response = route(request, split_path(request.path.substr(root.size())), route_name);
    }
    call.route = route_name;
    call.status = response.status;
    calls_.push_back(std::move(call));
  }
  return response;
}

FakeResponse FakeSynadia::route(const FakeRequest& request, const std::vector<std::string>& p,
                                std::string& route_name) {
  const std::string& m = request.method;
  const std::size_t n = p.size();
  auto body = [&]() {
    return json::parse(request.body.empty() ? std::string("{}") : request.body, nullptr, false);
  };
  if (n == 1 && p[0] == "teams" && m == "GET") {
    route_name = "GET /teams";
    json list = json::array();
    for (const auto& [id, t] : teams_) list.push_back({{"id", t.id}, {"name", t.name}});
    return answer(200, items(list));
  }
  if (n == 3 && p[0] == "teams" && p[2] == "systems" && m == "GET") {
    route_name = "GET /teams/{teamId}/systems";
    if (!teams_.count(p[1])) return text(404, "team not found");
    json list = json::array();
    for (const auto& [id, s] : systems_) {
      if (s.team_id == p[1]) list.push_back({{"id", s.id}, {"name", s.name}});
    }
    return answer(200, items(list));
  }
  if (n == 2 && p[0] == "systems" && m == "GET") {
    route_name = "GET /systems/{systemId}";
    const auto it = systems_.find(p[1]);
    if (it == systems_.end()) return text(404, "system not found");
    return answer(200, {{"id", it->second.id}, {"name", it->second.name},
                        {"team", {{"id", it->second.team_id}}}});
  }
  if (n == 3 && p[0] == "systems" && p[2] == "accounts") {
    if (!systems_.count(p[1])) {
      route_name = m + " /systems/{systemId}/accounts";
      return text(404, "system not found");
    }
    if (m == "GET") {
      route_name = "GET /systems/{systemId}/accounts";
      json list = json::array();
      for (const auto& [id, a] : accounts_) {
        if (a.system_id == p[1]) list.push_back(account_view(a));
      }
      return answer(200, items(list));
    }
    if (m == "POST") {
      route_name = "POST /systems/{systemId}/accounts";
      const json b = body();
      if (!b.is_object() || !b.contains("name") || !b["name"].is_string() ||
          b["name"].get<std::string>().empty()) {
        return text(400, "name is required");
      }
      Account a;
      a.id = new_id("acc");
      a.name = b["name"].get<std::string>();
      a.system_id = p[1];
      a.seed = new_seed(KeyType::account);
      a.public_key = nkeys::public_key_from_seed(a.seed);
      SkGroup g;
      g.id = new_id("skg");
      g.name = "Default";
      g.account_id = a.id;
      g.seed = new_seed(KeyType::account);
      g.public_key = nkeys::public_key_from_seed(g.seed);
      groups_[g.id] = g;
      accounts_[a.id] = a;
      return answer(201, account_view(a));
    }
  }
  if (n >= 2 && p[0] == "accounts") {
    const auto it = accounts_.find(p[1]);
    auto missing = [&](std::string name) {
      route_name = std::move(name);
      return text(404, "account not found");
    };
    if (n == 2 && m == "GET") {
      if (it == accounts_.end()) return missing("GET /accounts/{accountId}");
      route_name = "GET /accounts/{accountId}";
      return answer(200, account_view(it->second));
    }
    if (n == 3 && p[2] == "info" && m == "GET") {
      if (it == accounts_.end()) return missing("GET /accounts/{accountId}/info");
      route_name = "GET /accounts/{accountId}/info";
      return answer(200, {{"id", it->second.id}, {"jetstream", it->second.usage}});
    }
    if (n == 3 && p[2] == "metrics" && m == "GET") {
      if (it == accounts_.end()) return missing("GET /accounts/{accountId}/metrics");
      route_name = "GET /accounts/{accountId}/metrics";
      // AccountMetrics (the Go SDK's model): gauges as numbers, 0 when nothing is set.
      const json& u = it->second.usage;
      auto gauge = [&](const char* key) { return u.is_object() && u.contains(key) ? u[key] : json(0); };
      return answer(200, {{"nats_core_account_jetstream_memory_used", gauge("memory")},
                          {"nats_core_account_jetstream_storage_used", gauge("storage")},
                          {"nats_core_account_jetstream_stream_count", gauge("streams")},
                          {"nats_core_account_jetstream_consumer_count", gauge("consumers")},
                          {"nats_core_account_conn_count", gauge("connections")},
                          {"nats_core_account_jetstream_enabled", 1}});
    }
    if (n == 3 && p[2] == "account-sk-groups" && m == "GET") {
      if (it == accounts_.end()) return missing("GET /accounts/{accountId}/account-sk-groups");
      route_name = "GET /accounts/{accountId}/account-sk-groups";
      json list = json::array();
      for (const auto& [id, g] : groups_) {
        if (g.account_id == p[1]) {
          list.push_back({{"id", g.id}, {"name", g.name}, {"signing_key_public", g.public_key}});
        }
      }
      return answer(200, items(list));
    }
    if (n == 3 && p[2] == "nats-users") {
      if (it == accounts_.end()) return missing(m + " /accounts/{accountId}/nats-users");
      if (m == "GET") {
        route_name = "GET /accounts/{accountId}/nats-users";
        json list = json::array();
        for (const auto& [id, u] : users_) {
          if (u.account_id == p[1]) list.push_back(user_view(u));
        }
        return answer(200, items(list));
      }
      if (m == "POST") {
        route_name = "POST /accounts/{accountId}/nats-users";
        const json b = body();
        if (!b.is_object() || !b.contains("name") || !b["name"].is_string() ||
            !b.contains("sk_group_id") || !b["sk_group_id"].is_string()) {
          return text(400, "name and sk_group_id are required");
        }
        const auto group = groups_.find(b["sk_group_id"].get<std::string>());
        if (group == groups_.end() || group->second.account_id != p[1]) {
          return text(400, "unknown sk_group_id");
        }
        SynUser u;
        u.id = new_id("usr");
        u.name = b["name"].get<std::string>();
        u.account_id = p[1];
        u.sk_group_id = group->second.id;
        u.seed = new_seed(KeyType::user);
        u.public_key = nkeys::public_key_from_seed(u.seed);
        u.issued_at = unix_now();
        if (b.contains("jwt_expires_in_secs") && b["jwt_expires_in_secs"].is_number_integer() &&
            b["jwt_expires_in_secs"].get<std::int64_t>() > 0) {
          u.expires_at = u.issued_at + b["jwt_expires_in_secs"].get<std::int64_t>();
        }
        u.jwt = make_jwt(group->second.seed, u.public_key, u.name,
                         json{{"type", "user"},
                              {"version", 2},
                              {"issuer_account", it->second.public_key},
                              {"pub", json::object()},
                              {"sub", json::object()},
                              {"subs", -1},
                              {"data", -1},
                              {"payload", -1}},
                         u.issued_at, u.expires_at);
        users_[u.id] = u;
        return answer(201, user_view(u));
      }
    }
    if (n == 4 && p[2] == "nats-user-revocations") {
      if (it == accounts_.end()) return missing(m + " /accounts/{accountId}/nats-user-revocations/{userNkeyPublic}");
      route_name = m + " /accounts/{accountId}/nats-user-revocations/{userNkeyPublic}";
      auto& revocations = it->second.revocations;
      if (m == "PUT") {
        const json b = body();
        if (!b.is_object() || !b.contains("before") || !b["before"].is_number_integer()) {
          return text(400, "before is required");
        }
        std::int64_t before = b["before"].get<std::int64_t>();
        if (before == 0) before = unix_now();
        const bool fresh = !revocations.count(p[3]);
        revocations[p[3]] = before;
        return answer(fresh ? 201 : 200, {{"account_id", p[1]},
                                          {"user_nkey_public", p[3]},
                                          {"before", before},
                                          {"created", "2026-01-01T00:00:00Z"}});
      }
      const auto r = revocations.find(p[3]);
      if (r == revocations.end()) return text(404, "revocation not found");
      if (m == "GET") {
        return answer(200, {{"account_id", p[1]}, {"user_nkey_public", p[3]}, {"before", r->second}});
      }
      if (m == "DELETE") {
        revocations.erase(r);
        return no_content();
      }
    }
  }
  if (n >= 2 && p[0] == "nats-users") {
    const auto it = users_.find(p[1]);
    if (n == 3 && p[2] == "creds" && m == "POST") {
      route_name = "POST /nats-users/{userId}/creds";
      if (it == users_.end()) return text(404, "user not found");
      ++it->second.creds_downloads;
      return text(200, creds_file_text(it->second.jwt, it->second.seed));
    }
    if (n == 2) {
      route_name = m + " /nats-users/{userId}";
      if (it == users_.end()) return text(404, "user not found");
      if (m == "GET") return answer(200, user_view(it->second));
      if (m == "DELETE") {
        users_.erase(it);
        return no_content();
      }
    }
  }
  return text(404, "404 page not found");
}

FakeSynadiaServer::FakeSynadiaServer(std::string token)
    : synadia_(std::move(token)),
      server_([this](const FakeRequest& r) { return synadia_.handle(r); }) {}

}  // namespace orgd::testing
