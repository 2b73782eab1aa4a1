// Actions secrets: repository, environment and organization scopes (cloud-apis.md §1.3).

#include <algorithm>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing::github_fake {

namespace {

using Kind = SecretScope::Kind;
using State = FakeGithub::State;

constexpr std::size_t kMaxValueBytes = 48 * 1024;

SecretScope scope_of(Kind kind, const Ctx& ctx) {
  switch (kind) {
    case Kind::repository:
      return SecretScope::repository(ctx.param("owner"), ctx.param("repo"));
    case Kind::environment:
      return SecretScope::env(ctx.param("owner"), ctx.param("repo"),
                              ctx.param("environment_name"));
    case Kind::organization:
      return SecretScope::org(ctx.param("org"));
  }
  return {};
}

const char* scope_word(Kind kind) {
  switch (kind) {
    case Kind::repository:
      return "repository";
    case Kind::environment:
      return "environment";
    case Kind::organization:
      return "organization";
  }
  return "";
}

std::size_t max_secrets(Kind kind) { return kind == Kind::organization ? 1000 : 100; }

// [A-Za-z0-9_], not starting with a digit, not starting with GITHUB_ (any case).
bool valid_name(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  if (upper(name).rfind("GITHUB_", 0) == 0) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

json secret_json(Kind kind, const Ctx& ctx, const FakeSecret& s) {
  json j{{"name", s.name}, {"created_at", s.created_at}, {"updated_at", s.updated_at}};
  if (kind == Kind::organization) {
    j["visibility"] = s.visibility;
    if (s.visibility == "selected") {
      j["selected_repositories_url"] =
          ctx.base_url + "/orgs/" + ctx.param("org") + "/actions/secrets/" + s.name +
          "/repositories";
    }
  }
  return j;
}

Reply public_key(Kind kind, State& st, Ctx& ctx) {
  ScopeData& data = st.scope(scope_of(kind, ctx).key());
  std::string raw(reinterpret_cast<const char*>(data.public_key.data()), data.public_key.size());
  return Reply{200, json{{"key_id", data.key_id}, {"key", base64(raw)}}, false, {}};
}

Reply list(Kind kind, State& st, Ctx& ctx) {
  ScopeData& data = st.scope(scope_of(kind, ctx).key());
  std::vector<json> items;
  for (const auto& [name, s] : data.secrets) items.push_back(secret_json(kind, ctx, s));
  return paginate(ctx, items, [](json page, std::size_t total) {
    return json{{"total_count", total}, {"secrets", std::move(page)}};
  });
}

Reply get_one(Kind kind, State& st, Ctx& ctx) {
  ScopeData& data = st.scope(scope_of(kind, ctx).key());
  auto it = data.secrets.find(upper(ctx.param("secret_name")));
  if (it == data.secrets.end()) return not_found();
  return Reply{200, secret_json(kind, ctx, it->second), false, {}};
}

Reply put(Kind kind, State& st, Ctx& ctx) {
  const std::string name = ctx.param("secret_name");
  ScopeData& data = st.scope(scope_of(kind, ctx).key());
  json body = ctx.body();
  if (!body.is_object()) return invalid_request("Request body must be a JSON object.");
  for (const char* field : {"encrypted_value", "key_id"}) {
    if (!body.contains(field)) return invalid_request(std::string("\"") + field + "\" wasn't supplied.");
    if (!body[field].is_string()) {
      return invalid_request(std::string("For '") + field + "', " + body[field].dump() +
                             " is not a string.");
    }
  }
  std::string visibility;
  std::vector<std::int64_t> selected;
  if (kind == Kind::organization) {
    if (!body.contains("visibility")) return invalid_request("\"visibility\" wasn't supplied.");
    if (!body["visibility"].is_string()) {
      return invalid_request("For 'visibility', " + body["visibility"].dump() +
                             " is not a string.");
    }
    visibility = body["visibility"].get<std::string>();
    if (visibility != "all" && visibility != "private" && visibility != "selected") {
      return invalid_request("For 'visibility', \"" + visibility +
                             "\" is not a member of [\"all\", \"private\", \"selected\"].");
    }
    if (body.contains("selected_repository_ids")) {
      const json& ids = body["selected_repository_ids"];
      if (!ids.is_array() ||
          !std::all_of(ids.begin(), ids.end(), [](const json& v) { return v.is_number_integer(); })) {
        return invalid_request("For 'selected_repository_ids', " + ids.dump() +
                               " is not an array of integers.");
      }
      if (visibility != "selected") {
        return error(422, "Selected repositories may only be given when visibility is selected.");
      }
      for (const auto& v : ids) selected.push_back(v.get<std::int64_t>());
    }
  }
  if (!valid_name(name)) {
    return error(422,
                 "Failed to add secret. Secret names can only contain alphanumeric characters "
                 "([a-z], [A-Z], [0-9]) or underscores (_), must not start with a number, and "
                 "must not start with the GITHUB_ prefix.");
  }
  if (body["key_id"].get<std::string>() != data.key_id) {
    // A stale or made-up key_id: GitHub refuses the value rather than storing what it cannot
    // open (docs/testing-fakes.md: the exact status is not documented; 422 chosen).
    return error(422, std::string("Failed to add secret. key_id is not the current public key "
                                  "of this ") +
                          scope_word(kind) + ".");
  }
  auto sealed = unbase64(body["encrypted_value"].get<std::string>());
  if (!sealed || sealed->size() < crypto_box_SEALBYTES) {
    return error(422, "Failed to add secret. encrypted_value is not a Base64 sealed box.");
  }
  std::string clear(sealed->size() - crypto_box_SEALBYTES, '\0');
  if (crypto_box_seal_open(reinterpret_cast<unsigned char*>(clear.data()),
                           reinterpret_cast<const unsigned char*>(sealed->data()), sealed->size(),
                           data.public_key.data(), data.secret_key.data()) != 0) {
    return error(422,
                 "Failed to add secret. encrypted_value could not be decrypted with the key of "
                 "key_id " + data.key_id + ".");
  }
  if (clear.size() > kMaxValueBytes) {
    return error(422, "Failed to add secret. Secrets are limited to 48 KB in size.");
  }
  const std::string stored = upper(name);
  auto it = data.secrets.find(stored);
  const std::string now = iso8601(ctx.now);
  if (it == data.secrets.end()) {
    if (data.secrets.size() >= max_secrets(kind)) {
      return error(422, "Failed to add secret. You can store up to " +
                            std::to_string(max_secrets(kind)) + " " + scope_word(kind) +
                            " secrets.");
    }
    data.secrets[stored] = FakeSecret{stored, std::move(clear), now, now, visibility, selected};
    return created(json::object());
  }
  it->second.value = std::move(clear);
  it->second.updated_at = now;
  it->second.visibility = visibility;
  it->second.selected_repository_ids = selected;
  return no_content();
}

Reply remove(Kind kind, State& st, Ctx& ctx) {
  ScopeData& data = st.scope(scope_of(kind, ctx).key());
  if (data.secrets.erase(upper(ctx.param("secret_name"))) == 0) return not_found();
  return no_content();
}

// Organization secrets' selected repositories. Anything but visibility `selected` is a 409, as
// GitHub documents for the per-repository calls.
FakeSecret* selected_secret(State& st, Ctx& ctx, Reply& failure) {
  ScopeData& data = st.scope(SecretScope::org(ctx.param("org")).key());
  auto it = data.secrets.find(upper(ctx.param("secret_name")));
  if (it == data.secrets.end()) {
    failure = not_found();
    return nullptr;
  }
  if (it->second.visibility != "selected") {
    failure = error(409, "Conflict: the secret's visibility is not selected.");
    return nullptr;
  }
  return &it->second;
}

Reply list_repositories(State& st, Ctx& ctx) {
  Reply failure;
  FakeSecret* s = selected_secret(st, ctx, failure);
  if (s == nullptr) return failure;
  std::vector<json> items;
  for (auto id : s->selected_repository_ids) {
    std::string full;
    for (const auto& [name, rid] : st.repo_ids) {
      if (rid == id) full = name;
    }
    const auto slash = full.find('/');
    items.push_back(json{{"id", id},
                         {"name", slash == std::string::npos ? full : full.substr(slash + 1)},
                         {"full_name", full}});
  }
  return paginate(ctx, items, [](json page, std::size_t total) {
    return json{{"total_count", total}, {"repositories", std::move(page)}};
  });
}

Reply set_repositories(State& st, Ctx& ctx) {
  json body = ctx.body();
  if (!body.is_object() || !body.contains("selected_repository_ids")) {
    return invalid_request("\"selected_repository_ids\" wasn't supplied.");
  }
  const json& ids = body["selected_repository_ids"];
  if (!ids.is_array() ||
      !std::all_of(ids.begin(), ids.end(), [](const json& v) { return v.is_number_integer(); })) {
    return invalid_request("For 'selected_repository_ids', " + ids.dump() +
                           " is not an array of integers.");
  }
  Reply failure;
  FakeSecret* s = selected_secret(st, ctx, failure);
  if (s == nullptr) return failure;
  s->selected_repository_ids.clear();
  for (const auto& v : ids) s->selected_repository_ids.push_back(v.get<std::int64_t>());
  s->updated_at = iso8601(ctx.now);
  return no_content();
}

Reply change_repository(State& st, Ctx& ctx, bool add) {
  Reply failure;
  FakeSecret* s = selected_secret(st, ctx, failure);
  if (s == nullptr) return failure;
  const std::string& text = ctx.param("repository_id");
  if (text.empty() || !std::all_of(text.begin(), text.end(), ::isdigit) || text.size() > 18) {
    return not_found();
  }
  const std::int64_t id = std::stoll(text);
  auto& ids = s->selected_repository_ids;
  auto it = std::find(ids.begin(), ids.end(), id);
  if (add && it == ids.end()) ids.push_back(id);
  if (!add && it != ids.end()) ids.erase(it);
  return no_content();
}

}  // namespace

void add_secret_routes(std::vector<Route>& routes) {
  const std::pair<Kind, std::string> bases[] = {
      {Kind::repository, "/repos/{owner}/{repo}/actions/secrets"},
      {Kind::environment, "/repos/{owner}/{repo}/environments/{environment_name}/secrets"},
      {Kind::organization, "/orgs/{org}/actions/secrets"},
  };
  for (const auto& [kind, base] : bases) {
    const Kind k = kind;
    routes.push_back({"GET", base + "/public-key",
                      [k](State& st, Ctx& ctx) { return public_key(k, st, ctx); }});
    routes.push_back({"GET", base, [k](State& st, Ctx& ctx) { return list(k, st, ctx); }});
    routes.push_back({"GET", base + "/{secret_name}",
                      [k](State& st, Ctx& ctx) { return get_one(k, st, ctx); }});
    routes.push_back(
        {"PUT", base + "/{secret_name}", [k](State& st, Ctx& ctx) { return put(k, st, ctx); }});
    routes.push_back({"DELETE", base + "/{secret_name}",
                      [k](State& st, Ctx& ctx) { return remove(k, st, ctx); }});
  }
  const std::string org = "/orgs/{org}/actions/secrets/{secret_name}/repositories";
  routes.push_back({"GET", org, list_repositories});
  routes.push_back({"PUT", org, set_repositories});
  routes.push_back({"PUT", org + "/{repository_id}",
                    [](State& st, Ctx& ctx) { return change_repository(st, ctx, true); }});
  routes.push_back({"DELETE", org + "/{repository_id}",
                    [](State& st, Ctx& ctx) { return change_repository(st, ctx, false); }});
}

}  // namespace orgd::testing::github_fake
