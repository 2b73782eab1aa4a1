#include "plugins/github/actions_secrets.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "daemon/core/yaml_schema.hpp"
#include "plugins/github/secret_names.hpp"

namespace orgd::github {

SecretPlace parse_secret_place(const SecretTargetConfig& target, const std::string& source_file,
                               const Settings& settings) {
  SettingsReader reader = secret_target_settings(target, source_file);
  SecretPlace place;
  place.owner = settings.owner;
  const bool org = target.organization || reader.boolean("org", false);
  const auto repo = reader.string("repo");
  const auto environment = reader.string("environment");
  const auto visibility = reader.string("visibility");
  const auto selected = reader.string_list("selected_repos");
  if (org) {
    place.scope = SecretPlace::Scope::organization;
    if (repo) reader.invalid("repo", "organization secrets belong to no repo (org: true)");
    if (environment) reader.invalid("environment", "organization secrets have no environment");
    place.visibility = visibility.value_or("private");
    if (place.visibility != "all" && place.visibility != "private" &&
        place.visibility != "selected") {
      reader.invalid("visibility", "expected all, private or selected");
    }
    if (selected) place.selected_repos = *selected;
    if (place.visibility == "selected" && place.selected_repos.empty()) {
      reader.invalid("selected_repos", "visibility selected needs the repositories it is for");
    }
    if (place.visibility != "selected" && selected) {
      reader.invalid("selected_repos", "only with visibility: selected");
    }
  } else {
    if (visibility) reader.invalid("visibility", "only for organization secrets (org: true)");
    if (selected) reader.invalid("selected_repos", "only for organization secrets (org: true)");
    place.repo = repo.value_or(target.repo);
    if (environment) {
      place.scope = SecretPlace::Scope::environment;
      place.environment = *environment;
    }
  }
  if (place.owner.empty()) {
    reader.invalid("provider", "the github provider has no owner (set providers.<name>.owner)");
  }
  reader.finish();
  return place;
}

ActionsSecretTarget::ActionsSecretTarget(std::shared_ptr<RestClient> api, SecretPlace place)
    : api_(std::move(api)), place_(std::move(place)) {}

std::string ActionsSecretTarget::describe() const {
  switch (place_.scope) {
    case SecretPlace::Scope::repository:
      return fmt::format("github {}/{}", place_.owner, place_.repo);
    case SecretPlace::Scope::environment:
      return fmt::format("github {}/{} environment {}", place_.owner, place_.repo,
                         place_.environment);
    case SecretPlace::Scope::organization:
      return fmt::format("github organization {} ({})", place_.owner, place_.visibility);
  }
  return "github";
}

std::string ActionsSecretTarget::base() const {
  switch (place_.scope) {
    case SecretPlace::Scope::repository:
      return fmt::format("/repos/{}/{}/actions/secrets", path_segment(place_.owner),
                         path_segment(place_.repo));
    case SecretPlace::Scope::environment:
      return fmt::format("/repos/{}/{}/environments/{}/secrets", path_segment(place_.owner),
                         path_segment(place_.repo), path_segment(place_.environment));
    case SecretPlace::Scope::organization:
      return fmt::format("/orgs/{}/actions/secrets", path_segment(place_.owner));
  }
  return {};
}

int ActionsSecretTarget::keys_fetched() const {
  std::lock_guard lock(mutex_);
  return fetched_;
}

Result<ActionsSecretTarget::PublicKey> ActionsSecretTarget::public_key(bool refresh) {
  std::lock_guard lock(mutex_);
  if (key_ && !refresh) return *key_;
  auto answer = api_->call("fetching the public key of " + describe(), "GET", base() + "/public-key");
  if (!answer) return answer.error();
  const auto& json = answer.value();
  const auto id = json.is_object() ? json.find("key_id") : json.end();
  const auto key = json.is_object() ? json.find("key") : json.end();
  if (id == json.end() || key == json.end() || !key->is_string() ||
      !(id->is_string() || id->is_number_integer())) {
    return unavailable("the public key of " + describe() + ": GitHub's answer has no key_id and key");
  }
  PublicKey fetched{id->is_string() ? id->get<std::string>() : std::to_string(id->get<std::int64_t>()),
                    key->get<std::string>()};
  key_ = fetched;
  ++fetched_;
  return fetched;
}

Result<std::vector<std::int64_t>> ActionsSecretTarget::selected_repository_ids() {
  {
    std::lock_guard lock(mutex_);
    if (repo_ids_) return *repo_ids_;
  }
  std::vector<std::int64_t> ids;
  for (const auto& repo : place_.selected_repos) {
    auto answer = api_->call("looking up repository " + place_.owner + "/" + repo, "GET",
                             fmt::format("/repos/{}/{}", path_segment(place_.owner),
                                         path_segment(repo)));
    if (!answer) return answer.error();
    const auto id = answer.value().is_object() ? answer.value().find("id") : answer.value().end();
    if (id == answer.value().end() || !id->is_number_integer()) {
      return unavailable("repository " + place_.owner + "/" + repo + ": GitHub's answer has no id");
    }
    ids.push_back(id->get<std::int64_t>());
  }
  std::lock_guard lock(mutex_);
  repo_ids_ = ids;
  return ids;
}

Result<std::vector<SecretInfo>> ActionsSecretTarget::list() {
  auto items = api_->list("listing the secrets of " + describe(), base(), "secrets");
  if (!items) return items.error();
  std::vector<SecretInfo> out;
  out.reserve(items.value().size());
  for (const auto& item : items.value()) {
    const auto name = item.is_object() ? item.find("name") : item.end();
    if (name == item.end() || !name->is_string()) continue;
    SecretInfo info;
    info.name = name->get<std::string>();
    if (const auto updated = item.find("updated_at");
        updated != item.end() && updated->is_string()) {
      info.updated_at = parse_github_time(updated->get_ref<const std::string&>());
    }
    out.push_back(std::move(info));
  }
  return out;
}

Result<Ok> ActionsSecretTarget::put_with(const std::string& name, const PublicKey& key,
                                         const Secret& value) {
  auto sealed = seal_for_github(key.key, value);
  if (!sealed) return sealed.error();
  nlohmann::json body = {{"encrypted_value", sealed.value()}, {"key_id", key.key_id}};
  if (place_.scope == SecretPlace::Scope::organization) {
    body["visibility"] = place_.visibility;
    if (place_.visibility == "selected") {
      auto ids = selected_repository_ids();
      if (!ids) return ids.error();
      body["selected_repository_ids"] = ids.value();
    }
  }
  auto answer = api_->call("putting " + name + " to " + describe(), "PUT",
                           base() + "/" + path_segment(name), body.dump());
  if (!answer) return answer.error();
  return Ok{};
}

Result<Ok> ActionsSecretTarget::put(const std::string& name, const Secret& value) {
  auto normalized = normalize_secret_name(name);
  if (!normalized) return normalized.error();
  if (auto checked = check_secret_value(normalized.value(), value); !checked) {
    return checked.error();
  }
  const int fetched_before = keys_fetched();
  auto key = public_key(false);
  if (!key) return key.error();
  const bool cached = keys_fetched() == fetched_before;
  auto put = put_with(normalized.value(), key.value(), value);
  // A 422 after a cached key may be a key GitHub rotated since: fetched again, tried once more.
  if (!put && put.error().code == ErrorCode::invalid_argument && cached) {
    auto fresh = public_key(true);
    if (!fresh) return fresh.error();
    if (fresh.value().key_id != key.value().key_id) {
      return put_with(normalized.value(), fresh.value(), value);
    }
  }
  return put;
}

Result<Ok> ActionsSecretTarget::remove(const std::string& name) {
  auto normalized = normalize_secret_name(name);
  if (!normalized) return normalized.error();
  auto answer = api_->call("deleting " + normalized.value() + " from " + describe(), "DELETE",
                           base() + "/" + path_segment(normalized.value()));
  if (!answer) return answer.error();
  return Ok{};
}

}  // namespace orgd::github
