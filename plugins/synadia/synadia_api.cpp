#include "plugins/synadia/synadia_api.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <utility>

#include "daemon/net/rate_limits.hpp"

namespace orgd::synadia {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// What an error may carry of Synadia's answer: enough to act on, bounded whatever it sends.
constexpr std::size_t kMaxBodyChars = 300;
// No limits are documented: a 429 without Retry-After waits a minute.
constexpr seconds kDefaultWait{60};

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (const unsigned char c : text) {
    if (out.size() >= max) {
      out += "…";
      break;
    }
    const char ch = c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c);
    if (ch == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(ch);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// The text of an error body: its `message` / `error` / `detail` when JSON, else the text.
std::string body_text(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_object()) {
    for (const char* key : {"message", "error", "detail", "title"}) {
      const auto it = json.find(key);
      if (it != json.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
        return printable(it->get_ref<const std::string&>(), kMaxBodyChars);
      }
    }
  }
  return printable(body, kMaxBodyChars);
}

std::string name_list(const std::vector<nlohmann::json>& items) {
  std::string out;
  for (const auto& item : items) {
    std::string name = string_field(item, "name");
    const std::string id = string_field(item, "id");
    if (name.empty()) name = id;
    if (!out.empty()) out += ", ";
    out += name + (id.empty() || id == name ? "" : " (" + id + ")");
    if (out.size() > 400) {
      out += ", …";
      break;
    }
  }
  return out.empty() ? "none" : out;
}

// The item whose id or name is `wanted` (the id first); null when none.
const nlohmann::json* find_item(const std::vector<nlohmann::json>& items,
                                const std::string& wanted) {
  for (const auto& item : items) {
    if (string_field(item, "id") == wanted) return &item;
  }
  for (const auto& item : items) {
    if (string_field(item, "name") == wanted) return &item;
  }
  return nullptr;
}

std::optional<std::int64_t> int_at(const nlohmann::json& json,
                                   std::initializer_list<const char*> path) {
  const nlohmann::json* at = &json;
  for (const char* key : path) {
    if (!at->is_object()) return std::nullopt;
    const auto it = at->find(key);
    if (it == at->end()) return std::nullopt;
    at = &*it;
  }
  if (at->is_number_integer()) return at->get<std::int64_t>();
  if (at->is_number_float()) return static_cast<std::int64_t>(at->get<double>());
  return std::nullopt;
}

}  // namespace

Error status_error(const std::string& what, const HttpResponse& response) {
  const int status = response.status;
  std::string text = fmt::format("{}: Synadia answered {}", what, status);
  if (const std::string said = body_text(response.body); !said.empty()) text += ": " + said;
  if (status == 429) {
    auto wait = net::parse_retry_after(response.header("retry-after"),
                                       std::chrono::system_clock::now());
    return rate_limited(std::move(text),
                        std::max<milliseconds>(wait.value_or(kDefaultWait), milliseconds{1000}));
  }
  if (status >= 500 || status < 400) return unavailable(std::move(text));
  Error e;
  switch (status) {
    case 404: e = not_found(std::move(text)); break;
    case 409: e = conflict(std::move(text)); break;
    default: e = invalid_argument(std::move(text)); break;
  }
  return permanent(std::move(e));
}

std::string path_segment(std::string_view text) {
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string string_field(const nlohmann::json& json, const char* key) {
  if (!json.is_object()) return {};
  const auto it = json.find(key);
  if (it == json.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<std::int64_t>());
  return {};
}

std::optional<Clock::time_point> jwt_expiry(std::string_view jwt) {
  const auto first = jwt.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  const auto second = jwt.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const std::string_view payload = jwt.substr(first + 1, second - first - 1);
  if (sodium_init() < 0) return std::nullopt;
  std::string decoded(payload.size(), '\0');
  std::size_t length = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(decoded.data()), decoded.size(),
                        payload.data(), payload.size(), nullptr, &length, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return std::nullopt;
  }
  decoded.resize(length);
  const auto claims = nlohmann::json::parse(decoded, nullptr, /*allow_exceptions=*/false);
  const auto exp = int_at(claims, {"exp"});
  if (!exp || *exp <= 0) return std::nullopt;
  return Clock::time_point{std::chrono::duration_cast<Clock::time_point::duration>(seconds{*exp})};
}

CredsParts split_creds(std::string_view creds) {
  // Each part sits between a "-----BEGIN ...-----" line and the next "------END" line.
  auto part = [&](std::string_view begin_marker) -> std::string {
    const auto begin = creds.find(begin_marker);
    if (begin == std::string_view::npos) return {};
    const auto start = creds.find('\n', begin);
    if (start == std::string_view::npos) return {};
    const auto end = creds.find("------END", start);
    if (end == std::string_view::npos) return {};
    std::string out;
    for (const char c : creds.substr(start + 1, end - start - 1)) {
      if (std::isspace(static_cast<unsigned char>(c)) == 0) out.push_back(c);
    }
    return out;
  };
  return {part("-----BEGIN NATS USER JWT-----"), part("-----BEGIN USER NKEY SEED-----")};
}

Result<NatsUser> read_user(const nlohmann::json& json) {
  NatsUser user;
  user.id = string_field(json, "id");
  if (user.id.empty()) return unavailable("Synadia's NATS user has no id");
  user.name = string_field(json, "name");
  user.user_public_key = string_field(json, "user_public_key");
  user.jwt = string_field(json, "jwt");
  user.sk_group_id = string_field(json, "sk_group_id");
  // `account` is an object {id, name} or an id (unconfirmed which).
  if (const auto it = json.find("account"); it != json.end()) {
    user.account_id = it->is_object() ? string_field(*it, "id") : string_field(json, "account");
  }
  if (user.account_id.empty()) user.account_id = string_field(json, "account_id");
  user.expires_at = jwt_expiry(user.jwt);
  return user;
}

std::vector<ProviderQuota> read_quotas(const nlohmann::json& account, const nlohmann::json& info) {
  // Limits: the account's jwt_settings.limits (the account claims' shape: mem_storage,
  // disk_storage, streams, consumer, conn; -1 is unlimited), else the info's JetStream limits
  // (max_memory, max_storage, ...). Usage: the metrics' nats_core_account_* numbers (the Go
  // SDK's AccountMetrics), else JetStream numbers, flat or under `jetstream` /
  // `jetstream.stats`. Not in cloud-apis.md (unconfirmed).
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json* limits = &empty;
  for (const auto* source : {&account, &info}) {
    for (const char* key : {"jwt_settings", "claims"}) {
      if (!source->is_object() || !source->contains(key)) continue;
      const auto& settings = (*source)[key];
      if (settings.is_object() && settings.contains("limits") && settings["limits"].is_object()) {
        limits = &settings["limits"];
        break;
      }
      if (settings.is_object() && settings.contains("nats") && settings["nats"].is_object() &&
          settings["nats"].contains("limits") && settings["nats"]["limits"].is_object()) {
        limits = &settings["nats"]["limits"];
        break;
      }
    }
    if (limits != &empty) break;
  }
  const nlohmann::json* usage = &empty;
  if (info.is_object()) {
    usage = &info;
    for (const char* key : {"jetstream", "jetstream_stats", "js"}) {
      if (info.contains(key) && info[key].is_object()) {
        usage = &info[key];
        if (usage->contains("stats") && (*usage)["stats"].is_object()) usage = &(*usage)["stats"];
        break;
      }
    }
  }
  const nlohmann::json* js_limits =
      usage->contains("limits") && (*usage)["limits"].is_object() ? &(*usage)["limits"] : &empty;

  struct Row {
    const char* name;
    const char* used;
    const char* metric;  // GET /accounts/{id}/metrics (AccountMetrics of the Go SDK)
    const char* claim_limit;
    const char* js_limit;
  };
  const Row rows[] = {
      {"jetstream_memory_bytes", "memory", "nats_core_account_jetstream_memory_used",
       "mem_storage", "max_memory"},
      {"jetstream_storage_bytes", "storage", "nats_core_account_jetstream_storage_used",
       "disk_storage", "max_storage"},
      {"jetstream_streams", "streams", "nats_core_account_jetstream_stream_count", "streams",
       "max_streams"},
      {"jetstream_consumers", "consumers", "nats_core_account_jetstream_consumer_count",
       "consumer", "max_consumers"},
      {"connections", "connections", "nats_core_account_conn_count", "conn", "max_connections"},
  };
  std::vector<ProviderQuota> out;
  for (const Row& row : rows) {
    ProviderQuota q;
    q.name = row.name;
    q.used = int_at(info, {row.metric});
    if (!q.used) q.used = int_at(*usage, {row.used});
    auto limit = int_at(*limits, {row.claim_limit});
    if (!limit) limit = int_at(*js_limits, {row.js_limit});
    if (limit && *limit >= 0) q.limit = limit;
    // -1 (unlimited) is shown as no limit; a quota with nothing known is left out.
    if (!q.used && !limit) continue;
    out.push_back(std::move(q));
  }
  return out;
}

SynadiaApi::SynadiaApi(Settings settings, TransportFactory make_transport, TokenGetter token,
                       std::shared_ptr<const Clock> clock)
    : settings_(std::move(settings)),
      make_transport_(std::move(make_transport)),
      token_(std::move(token)),
      clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {}

Result<std::shared_ptr<HttpTransport>> SynadiaApi::transport() {
  std::lock_guard lock(mutex_);
  if (transport_) return transport_;
  auto made = make_transport_();
  if (!made) return made.error();
  transport_ = made.value();
  return transport_;
}

Result<HttpResponse> SynadiaApi::send(const Request& r) {
  auto transport = this->transport();
  if (!transport) return transport.error();
  auto token = token_();
  if (!token) return token.error();
  HttpRequest request;
  request.method = r.method;
  request.url = settings_.api_url + r.path;
  request.headers = {{"Accept", r.accept}};
  if (!r.body.empty()) request.headers.push_back({"Content-Type", "application/json"});
  request.body = r.body;
  request.authorization = std::move(token).value();
  request.idempotent = r.idempotent;
  request.deadline = r.deadline;
  ++calls_;
  return transport.value()->send(std::move(request));
}

Result<HttpResponse> SynadiaApi::call(const std::string& what, const Request& request) {
  auto response = send(request);
  if (!response) {
    Error e = response.error();
    e.message = what + ": " + e.message;
    return e;
  }
  if (response.value().status / 100 != 2) return status_error(what, response.value());
  return response;
}

Result<nlohmann::json> SynadiaApi::call_json(const std::string& what, const Request& request) {
  auto response = call(what, request);
  if (!response) return response.error();
  auto json = nlohmann::json::parse(response.value().body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return unavailable(fmt::format("{}: Synadia answered {} with a body that is not a JSON object",
                                   what, response.value().status));
  }
  return json;
}

Result<std::vector<nlohmann::json>> SynadiaApi::list(const std::string& what,
                                                     const std::string& path, Deadline deadline) {
  Request request;
  request.path = path;
  request.deadline = deadline;
  auto json = call_json(what, request);
  if (!json) return json.error();
  const auto items = json.value().find("items");
  if (items == json.value().end() || !items->is_array()) {
    // An empty list may come as {items: null} or {}.
    if (items == json.value().end() || items->is_null()) return std::vector<nlohmann::json>{};
    return unavailable(what + ": Synadia's answer has no items list");
  }
  std::vector<nlohmann::json> out;
  out.reserve(items->size());
  for (auto& item : *items) {
    if (item.is_object()) out.push_back(std::move(item));
  }
  return out;
}

Result<nlohmann::json> SynadiaApi::get_system(const std::string& system_id, Deadline deadline) {
  Request request;
  request.path = "/systems/" + path_segment(system_id);
  request.deadline = deadline;
  return call_json("reading system " + system_id, request);
}

Result<std::vector<nlohmann::json>> SynadiaApi::list_teams(Deadline deadline) {
  return list("listing teams", "/teams", deadline);
}

Result<std::vector<nlohmann::json>> SynadiaApi::list_systems(const std::string& team_id,
                                                             Deadline deadline) {
  return list("listing the systems of team " + team_id,
              "/teams/" + path_segment(team_id) + "/systems", deadline);
}

Result<std::vector<nlohmann::json>> SynadiaApi::list_accounts(const std::string& system_id,
                                                              Deadline deadline) {
  return list("listing the accounts of system " + system_id,
              "/systems/" + path_segment(system_id) + "/accounts", deadline);
}

Result<nlohmann::json> SynadiaApi::create_account(const std::string& system_id,
                                                  const std::string& name, Deadline deadline) {
  Request request;
  request.method = "POST";
  request.path = "/systems/" + path_segment(system_id) + "/accounts";
  request.body = nlohmann::json{{"name", name}}.dump();
  request.deadline = deadline;
  return call_json("creating account " + name, request);
}

Result<nlohmann::json> SynadiaApi::get_account(const std::string& account_id, Deadline deadline) {
  Request request;
  request.path = "/accounts/" + path_segment(account_id);
  request.deadline = deadline;
  return call_json("reading account " + account_id, request);
}

Result<nlohmann::json> SynadiaApi::account_info(const std::string& account_id, Deadline deadline) {
  Request request;
  request.path = "/accounts/" + path_segment(account_id) + "/info";
  request.deadline = deadline;
  return call_json("reading the info of account " + account_id, request);
}

Result<nlohmann::json> SynadiaApi::account_metrics(const std::string& account_id,
                                                   Deadline deadline) {
  Request request;
  request.path = "/accounts/" + path_segment(account_id) + "/metrics";
  request.deadline = deadline;
  return call_json("reading the metrics of account " + account_id, request);
}

Result<std::vector<nlohmann::json>> SynadiaApi::list_sk_groups(const std::string& account_id,
                                                               Deadline deadline) {
  return list("listing the signing-key groups of account " + account_id,
              "/accounts/" + path_segment(account_id) + "/account-sk-groups", deadline);
}

Result<NatsUser> SynadiaApi::create_user(const std::string& account_id, const std::string& name,
                                         const std::string& sk_group_id, Deadline deadline) {
  nlohmann::json body{{"name", name}, {"sk_group_id", sk_group_id}};
  if (settings_.jwt_expires_in) {
    body["jwt_expires_in_secs"] =
        std::chrono::duration_cast<seconds>(*settings_.jwt_expires_in).count();
  }
  Request request;
  request.method = "POST";
  request.path = "/accounts/" + path_segment(account_id) + "/nats-users";
  request.body = body.dump();
  request.deadline = deadline;
  auto json = call_json("creating NATS user " + name, request);
  if (!json) return json.error();
  return read_user(json.value());
}

Result<NatsUser> SynadiaApi::get_user(const std::string& user_id, Deadline deadline) {
  Request request;
  request.path = "/nats-users/" + path_segment(user_id);
  request.deadline = deadline;
  auto json = call_json("reading NATS user " + user_id, request);
  if (!json) return json.error();
  return read_user(json.value());
}

Result<std::vector<NatsUser>> SynadiaApi::list_users(const std::string& account_id,
                                                     Deadline deadline) {
  auto items = list("listing the NATS users of account " + account_id,
                    "/accounts/" + path_segment(account_id) + "/nats-users", deadline);
  if (!items) return items.error();
  std::vector<NatsUser> out;
  for (const auto& item : items.value()) {
    if (auto user = read_user(item)) out.push_back(std::move(user).value());
  }
  return out;
}

Result<Secret> SynadiaApi::download_creds(const std::string& user_id, Deadline deadline) {
  Request request;
  request.method = "POST";
  request.path = "/nats-users/" + path_segment(user_id) + "/creds";
  request.accept = "text/plain";
  request.deadline = deadline;
  // Downloading creds changes nothing: it may be sent again.
  request.idempotent = true;
  auto response = call("downloading the creds of NATS user " + user_id, request);
  if (!response) return response.error();
  Secret creds = Secret::take(std::move(response.value().body));
  const CredsParts parts = split_creds(creds.expose());
  const bool whole = !parts.jwt.empty() && !parts.seed.empty();
  // The seed was copied into `parts`: wipe it.
  std::string seed = parts.seed;
  sodium_memzero(seed.data(), seed.size());
  if (!whole) {
    return unavailable("downloading the creds of NATS user " + user_id +
                       ": Synadia's answer is not a creds file (no JWT and seed)");
  }
  return creds;
}

Result<Ok> SynadiaApi::delete_user(const std::string& user_id, Deadline deadline) {
  Request request;
  request.method = "DELETE";
  request.path = "/nats-users/" + path_segment(user_id);
  request.deadline = deadline;
  auto response = call("deleting NATS user " + user_id, request);
  if (!response) return response.error();
  return Ok{};
}

Result<Ok> SynadiaApi::revoke_user(const std::string& account_id,
                                   const std::string& user_public_key, Deadline deadline) {
  Request request;
  request.method = "PUT";
  request.path = "/accounts/" + path_segment(account_id) + "/nats-user-revocations/" +
                 path_segment(user_public_key);
  request.body = R"({"before":0})";
  request.deadline = deadline;
  auto response = call("revoking NATS user key " + user_public_key, request);
  if (!response) return response.error();
  return Ok{};
}

void SynadiaApi::forget() {
  std::lock_guard lock(resolve_mutex_);
  ids_.reset();
}

Result<ResolvedIds> SynadiaApi::resolve(Deadline deadline) {
  std::lock_guard lock(resolve_mutex_);
  if (ids_) return *ids_;
  auto ids = resolve_now(deadline);
  if (ids) ids_ = ids.value();
  return ids;
}

Result<ResolvedIds> SynadiaApi::resolve_now(Deadline deadline) {
  ResolvedIds ids;
  // The system: by id directly; else by name among every team's systems.
  auto system = get_system(settings_.system, deadline);
  if (system) {
    ids.system_id = string_field(system.value(), "id");
    if (ids.system_id.empty()) ids.system_id = settings_.system;
  } else if (system.error().code == ErrorCode::not_found ||
             (system.error().code == ErrorCode::invalid_argument &&
              system.error().message.find("answered 400") != std::string::npos)) {
    auto teams = list_teams(deadline);
    if (!teams) return teams.error();
    std::vector<nlohmann::json> all;
    for (const auto& team : teams.value()) {
      auto systems = list_systems(string_field(team, "id"), deadline);
      if (!systems) return systems.error();
      all.insert(all.end(), systems.value().begin(), systems.value().end());
    }
    const nlohmann::json* found = find_item(all, settings_.system);
    if (found == nullptr) {
      return permanent(not_found(fmt::format("Synadia system '{}' not found (systems: {})",
                                             settings_.system, name_list(all))));
    }
    ids.system_id = string_field(*found, "id");
  } else {
    return system.error();
  }

  // The account, in that system; created when missing and create_account.
  auto accounts = list_accounts(ids.system_id, deadline);
  if (!accounts) return accounts.error();
  if (const nlohmann::json* found = find_item(accounts.value(), settings_.account)) {
    ids.account_id = string_field(*found, "id");
    ids.account_name = string_field(*found, "name");
  } else if (settings_.create_account) {
    auto created = create_account(ids.system_id, settings_.account, deadline);
    if (!created) return created.error();
    ids.account_id = string_field(created.value(), "id");
    ids.account_name = settings_.account;
    ids.account_created = true;
    if (ids.account_id.empty()) return unavailable("creating account: Synadia's answer has no id");
  } else {
    return permanent(not_found(fmt::format(
        "Synadia account '{}' not found in system {} (accounts: {}; create_account: true makes it)",
        settings_.account, ids.system_id, name_list(accounts.value()))));
  }

  // The signing-key group.
  auto groups = list_sk_groups(ids.account_id, deadline);
  if (!groups) return groups.error();
  const nlohmann::json* group = nullptr;
  if (!settings_.sk_group.empty()) {
    group = find_item(groups.value(), settings_.sk_group);
    if (group == nullptr) {
      return permanent(not_found(
          fmt::format("signing-key group '{}' not found in account {} (groups: {})",
                      settings_.sk_group, ids.account_id, name_list(groups.value()))));
    }
  } else if (groups.value().size() == 1) {
    group = &groups.value().front();
  } else {
    // Several: the one marked default (is_default, unconfirmed), else the one named "Default".
    for (const auto& item : groups.value()) {
      const auto flag = item.find("is_default");
      if (flag != item.end() && flag->is_boolean() && flag->get<bool>()) group = &item;
    }
    if (group == nullptr) {
      for (const auto& item : groups.value()) {
        std::string name = string_field(item, "name");
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (name == "default") group = &item;
      }
    }
    if (group == nullptr) {
      return permanent(invalid_argument(fmt::format(
          "account {} has {} signing-key groups and none is the default: set sk_group to one "
          "of: {}",
          ids.account_id, groups.value().size(), name_list(groups.value()))));
    }
  }
  ids.sk_group_id = string_field(*group, "id");
  if (ids.sk_group_id.empty()) return unavailable("Synadia's signing-key group has no id");
  return ids;
}

}  // namespace orgd::synadia
