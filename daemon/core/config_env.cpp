#include "daemon/core/config_env.hpp"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/core/config_values.hpp"

namespace orgd {

void apply_environment(const Environment& env, Config& config, SchemaReader& schema) {
  auto non_empty = [&](const char* name) -> std::optional<std::string> {
    auto value = env.get(name);
    if (!value || trim(*value).empty()) return std::nullopt;
    return value;
  };
  NatsConfig& nats = config.nats;

  // NATS_URLS wins over NATS_URL when both are set.
  for (const char* name : {"NATS_URLS", "NATS_URL"}) {
    auto value = non_empty(name);
    if (!value) continue;
    std::vector<std::string> urls;
    bool ok = true;
    for (auto& url : split_urls(*value)) {
      if (auto problem = url_problem(url)) {
        schema.report_env(name, *problem);
        ok = false;
      } else {
        urls.push_back(std::move(url));
      }
    }
    if (ok) {
      nats.urls = std::move(urls);
      nats.embedded = false;
    }
    break;
  }
  if (auto value = non_empty("NATS_CREDS_FILE")) nats.creds_file = *value;
  if (auto value = non_empty("NATS_NKEY_FILE")) nats.nkey_file = *value;

  // Only the variables' names are kept: their values are secrets, read when connecting.
  const bool has_jwt = non_empty("NATS_JWT").has_value();
  const bool has_seed = non_empty("NATS_NKEY_SEED").has_value();
  if (has_jwt && has_seed) {
    nats.jwt_env = "NATS_JWT";
    nats.nkey_seed_env = "NATS_NKEY_SEED";
  } else if (has_jwt) {
    schema.report_env("NATS_JWT", "is set without NATS_NKEY_SEED (a user JWT needs its seed)");
  } else if (has_seed) {
    schema.report_env("NATS_NKEY_SEED",
                      "is set without NATS_JWT (set both, or use NATS_NKEY_FILE)");
  }

  if (auto value = non_empty("NATS_TLS_CA_FILE")) nats.tls.ca_file = *value;
  if (auto value = non_empty("NATS_TLS_CERT_FILE")) nats.tls.cert_file = *value;
  if (auto value = non_empty("NATS_TLS_KEY_FILE")) nats.tls.key_file = *value;

  if (auto value = non_empty("ORGD_HTTP_LISTEN")) {
    std::string host;
    std::uint16_t port = 0;
    const std::string text{trim(*value)};
    if (auto problem = listen_problem(text, host, port)) {
      schema.report_env("ORGD_HTTP_LISTEN",
                        fmt::format("invalid listen address {}: {}", quoted(text), *problem));
    } else {
      config.http.host = std::move(host);
      config.http.port = port;
    }
  }
}

}  // namespace orgd
