#include "plugins/synadia/synadia_settings.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "daemon/core/yaml_schema.hpp"
#include "daemon/net/url.hpp"

namespace orgd::synadia {

namespace {

bool valid_env_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) != 0) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

// A user name prefix: letters, digits, - and _ (it starts every user orgd makes).
bool valid_prefix(std::string_view prefix) {
  return !prefix.empty() && prefix.size() <= 40 &&
         std::all_of(prefix.begin(), prefix.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
         });
}

bool printable_name(std::string_view text) {
  return !text.empty() && text.size() <= 200 && std::all_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  });
}

bool acceptable_nats_url(const std::string& url) {
  for (const char* scheme : {"nats://", "tls://", "ws://", "wss://"}) {
    if (url.rfind(scheme, 0) == 0) return url.size() > std::string_view(scheme).size();
  }
  return false;
}

}  // namespace

Settings parse_settings(const ProviderConfig& config, const std::string& source_file) {
  SettingsReader reader = provider_settings(config, source_file);
  Settings s;
  s.name = config.name;
  if (auto url = reader.string("api_url")) {
    while (url->size() > 1 && url->back() == '/') url->pop_back();
    std::string why;
    if (!net::acceptable_api_url(*url, why)) {
      reader.invalid("api_url", why);
    } else {
      s.api_url = std::move(*url);
    }
  }
  s.token_env = reader.required_string("token_env");
  if (!s.token_env.empty() && !valid_env_name(s.token_env)) {
    reader.invalid("token_env", "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
  }
  s.ca_file = reader.string("ca_file").value_or("");
  s.system = reader.required_string("system");
  if (!s.system.empty() && !printable_name(s.system)) {
    reader.invalid("system", "must be the system's name or id (printable, at most 200 characters)");
  }
  s.account = reader.required_string("account");
  if (!s.account.empty() && !printable_name(s.account)) {
    reader.invalid("account",
                   "must be the account's name or id (printable, at most 200 characters)");
  }
  s.sk_group = reader.string("sk_group").value_or("");
  if (!s.sk_group.empty() && !printable_name(s.sk_group)) {
    reader.invalid("sk_group", "must be the signing-key group's name or id");
  }
  s.user_name_prefix = reader.string("user_name_prefix").value_or(s.user_name_prefix);
  if (!valid_prefix(s.user_name_prefix)) {
    reader.invalid("user_name_prefix", "letters, digits, - and _ (1 to 40 characters)");
  }
  if (reader.string("jwt_expires_in")) {
    const Duration d = reader.duration("jwt_expires_in", Duration{0});
    if (d < std::chrono::seconds{60}) {
      reader.invalid("jwt_expires_in", "at least 1m (Synadia counts it in seconds)");
    } else {
      s.jwt_expires_in = d;
    }
  }
  s.create_account = reader.boolean("create_account", false);
  s.nats_url = reader.string("nats_url").value_or("");
  if (!s.nats_url.empty() && !acceptable_nats_url(s.nats_url)) {
    reader.invalid("nats_url", "must be a NATS URL: nats://, tls://, ws:// or wss://host[:port]");
  }
  s.creds_env = reader.string("creds_env").value_or("");
  if (!s.creds_env.empty() && !valid_env_name(s.creds_env)) {
    reader.invalid("creds_env", "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
  }
  s.creds_file = reader.string("creds_file").value_or("");
  if (!s.creds_env.empty() && !s.creds_file.empty()) {
    reader.invalid("creds_file", "creds_env and creds_file are exclusive");
  }
  if (s.nats_url.empty() && (!s.creds_env.empty() || !s.creds_file.empty())) {
    reader.invalid(s.creds_env.empty() ? "creds_file" : "creds_env",
                   "only used by the probe's connect: set nats_url too");
  }
  reader.finish();
  return s;
}

}  // namespace orgd::synadia
