#include "daemon/bus/nats_settings.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>

#include "daemon/bus/nkeys.hpp"
#include "daemon/core/secret_source.hpp"

namespace orgd {
namespace {

// "nats://127.0.0.1:4222" -> host, port (for the embedded server's listen address).
std::pair<std::string, std::uint16_t> host_port_of(const std::string& url) {
  std::string rest = url;
  if (auto p = rest.find("://"); p != std::string::npos) rest = rest.substr(p + 3);
  if (auto at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
  if (auto slash = rest.find('/'); slash != std::string::npos) rest = rest.substr(0, slash);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) return {rest, 4222};
  std::string host = rest.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = std::stoi(rest.substr(colon + 1));
  if (port < 0 || port > 65535) throw std::runtime_error("invalid port in " + url);
  return {host, static_cast<std::uint16_t>(port)};
}

Secret read_env_secret(const SecretSource& source, const std::string& name, const char* what) {
  if (name.empty()) return {};
  auto value = source.from_env(name);
  if (!value) throw std::runtime_error(fmt::format("{}: {}", what, value.error().message));
  return std::move(value.value());
}

}  // namespace

NatsConnectionSettings nats_connection_settings(const NatsConfig& n, const Environment& env) {
  const SecretSource secrets(env);
  NatsConnectionSettings s;
  s.urls = n.urls;
  s.name = "orgd";
  s.creds_file = n.creds_file;
  if (!n.nkey_file.empty()) s.nkey_seed = Secret::take(nkeys::read_seed_file(n.nkey_file));
  s.token = Secret::from(n.token);
  if (!n.token_env.empty()) s.token = read_env_secret(secrets, n.token_env, "nats.token_env");
  s.user = n.user;
  s.password = read_env_secret(secrets, n.password_env, "nats.password_env");
  if (!n.jwt_env.empty() || !n.nkey_seed_env.empty()) {
    s.jwt = read_env_secret(secrets, n.jwt_env, "nats.jwt_env");
    s.jwt_seed = read_env_secret(secrets, n.nkey_seed_env, "nats.nkey_seed_env");
  }
  s.tls = {n.tls.ca_file, n.tls.cert_file, n.tls.key_file};
  for (const auto& u : n.urls) {
    if (u.rfind("tls://", 0) == 0) s.tls_required = true;
  }
  s.connect_timeout = n.connect_timeout;
  s.reconnect_wait = n.reconnect_wait;
  s.retry_on_failed_connect = true;
  return s;
}

EmbeddedServerSettings embedded_server_settings(const NatsConfig& config) {
  auto [host, port] = host_port_of(config.urls.at(0));
  EmbeddedServerSettings es;
  es.binary = config.server_binary;
  es.host = host;
  es.port = port;
  es.store_dir = (std::filesystem::path(config.data_dir) / "nats").string();
  if (!config.server_include.empty()) {
    // nats-server 2.9 joins an include's path to the directory of the config file, even a path
    // that is absolute: name the fragment relative to the generated file's directory.
    const auto store = std::filesystem::absolute(es.store_dir).lexically_normal();
    const auto fragment = std::filesystem::absolute(config.server_include).lexically_normal();
    es.extra_config = "include " + nats_config_string(fragment.lexically_relative(store).string());
  }
  return es;
}

}  // namespace orgd
