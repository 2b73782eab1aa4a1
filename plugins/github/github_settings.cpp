#include "plugins/github/github_settings.hpp"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <string_view>

#include "daemon/core/yaml_schema.hpp"
#include "daemon/net/url.hpp"

namespace orgd::github {

namespace {

constexpr auto kProviderKeys =
    std::to_array<std::string_view>({"type", "api_url", "token_env", "app", "owner", "ca_file",
                                     "webhook_secret_env", "webhook_dedup_window", "api_version"});
constexpr auto kAppKeys =
    std::to_array<std::string_view>({"id", "installation_id", "private_key_file"});

bool all_of(std::string_view text, int (*pred)(int)) {
  for (const char c : text) {
    if (pred(static_cast<unsigned char>(c)) == 0) return false;
  }
  return true;
}

int env_name_char(int c) { return std::isalnum(c) != 0 || c == '_' ? 1 : 0; }
int digit_char(int c) { return std::isdigit(c); }
// GitHub logins: letters, digits and single hyphens.
int login_char(int c) { return std::isalnum(c) != 0 || c == '-' ? 1 : 0; }
// Client IDs ("Iv1.0123abcd", "Iv23li...") and numeric application IDs.
int app_id_char(int c) { return std::isalnum(c) != 0 || c == '.' ? 1 : 0; }

bool valid_env_name(std::string_view name) {
  return !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])) == 0 &&
         all_of(name, env_name_char);
}

// YYYY-MM-DD, as GitHub names its API versions.
bool valid_api_version(std::string_view v) {
  if (v.size() != 10 || v[4] != '-' || v[7] != '-') return false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i == 4 || i == 7) continue;
    if (std::isdigit(static_cast<unsigned char>(v[i])) == 0) return false;
  }
  return true;
}

}  // namespace

Settings parse_settings(const ProviderConfig& config, const std::string& source_file,
                        const std::string& default_owner) {
  SchemaReader schema(source_file);
  const std::string path = "providers." + config.name;
  Settings s;
  s.name = config.name;
  s.owner = default_owner;
  const auto entries = schema.mapping(config.settings, path, config.line, kProviderKeys);
  if (!entries) schema.fail();

  bool has_token = false;
  bool has_app = false;
  for (const SchemaEntry& e : *entries) {
    if (e.key == "type") continue;  // orgd's, checked by the loader
    if (e.key == "api_url") {
      std::string url;
      schema.read_string(e, url, /*allow_empty=*/false);
      if (url.empty()) continue;
      while (url.size() > 1 && url.back() == '/') url.pop_back();
      std::string why;
      if (!net::acceptable_api_url(url, why)) {
        schema.report(e.value_line, e.path, why);
      } else {
        s.api_url = std::move(url);
      }
    } else if (e.key == "token_env" || e.key == "webhook_secret_env") {
      std::string name;
      schema.read_string(e, name, /*allow_empty=*/false);
      if (name.empty()) continue;
      if (!valid_env_name(name)) {
        schema.report(e.value_line, e.path,
                      "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
        continue;
      }
      if (e.key == "token_env") {
        s.token_env = std::move(name);
        has_token = true;
      } else {
        s.webhook_secret_env = std::move(name);
      }
    } else if (e.key == "app") {
      has_app = true;
      const auto app_entries = schema.mapping(e.value, e.path, e.value_line, kAppKeys);
      if (!app_entries) continue;
      AppSettings app;
      bool complete = true;
      for (const char* required : {"id", "installation_id", "private_key_file"}) {
        bool found = false;
        for (const auto& a : *app_entries) found = found || a.key == required;
        if (!found) {
          schema.report(e.value_line, e.path + "." + required, "required key missing");
          complete = false;
        }
      }
      for (const SchemaEntry& a : *app_entries) {
        std::string value;
        schema.read_string(a, value, /*allow_empty=*/false);
        if (value.empty()) {
          complete = false;
          continue;
        }
        if (a.key == "id") {
          if (!all_of(value, app_id_char)) {
            schema.report(a.value_line, a.path,
                          "must be the App's client ID or its numeric application ID");
            complete = false;
          }
          app.id = std::move(value);
        } else if (a.key == "installation_id") {
          if (!all_of(value, digit_char)) {
            schema.report(a.value_line, a.path, "must be a number (the installation's id)");
            complete = false;
          }
          app.installation_id = std::move(value);
        } else {
          app.private_key_file = std::move(value);
        }
      }
      if (complete) s.app = std::move(app);
    } else if (e.key == "owner") {
      std::string owner;
      schema.read_string(e, owner, /*allow_empty=*/false);
      if (owner.empty()) continue;
      if (!all_of(owner, login_char) || owner.front() == '-' || owner.size() > 39) {
        schema.report(e.value_line, e.path,
                      "must be a GitHub organization or user name (letters, digits, hyphens)");
        continue;
      }
      s.owner = std::move(owner);
    } else if (e.key == "ca_file") {
      schema.read_string(e, s.ca_file, /*allow_empty=*/false);
    } else if (e.key == "webhook_dedup_window") {
      schema.read_duration(e, /*allow_zero=*/false, s.webhook_dedup_window);
      if (s.webhook_dedup_window < std::chrono::seconds{1} ||
          s.webhook_dedup_window > kMaxDedupWindow) {
        schema.report(e.value_line, e.path,
                      "must be between 1s and 168h (GITHUB_EVENTS keeps deliveries 7 days)");
        s.webhook_dedup_window = std::chrono::hours{24};
      }
    } else if (e.key == "api_version") {
      std::string version;
      schema.read_string(e, version, /*allow_empty=*/false);
      if (version.empty()) continue;
      if (!valid_api_version(version)) {
        schema.report(e.value_line, e.path, "must be a GitHub REST API version such as 2022-11-28");
        continue;
      }
      s.api_version = std::move(version);
    }
  }
  if (has_token && has_app) {
    schema.report(config.line, path,
                  "token_env and app are exclusive: authenticate with a token or as an App");
  } else if (!has_token && !has_app) {
    schema.report(config.line, path,
                  "needs token_env (a personal access token) or app: {id, installation_id, "
                  "private_key_file}");
  }
  schema.throw_if_problems();
  return s;
}

}  // namespace orgd::github
