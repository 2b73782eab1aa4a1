#include "cli/client.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <iostream>

#include "daemon/bus/nkeys.hpp"
#include "daemon/core/config_values.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::cli {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

}  // namespace

void ClientOptions::add_flags(CLI::App& app) {
  app.add_option("-s,--server", server,
                 "NATS server URL(s), comma-separated (default: $NATS_URL, $NATS_URLS, "
                 "nats://127.0.0.1:4222)");
  app.add_option("--creds", creds, "NATS credentials file (default: $NATS_CREDS_FILE)");
  app.add_option("--nkey", nkey, "File with an nkey user seed (default: $NATS_NKEY_FILE)");
  app.add_option("--tls-ca", tls_ca, "CA file (default: $NATS_TLS_CA_FILE)");
  app.add_option("--tls-cert", tls_cert, "Client certificate (default: $NATS_TLS_CERT_FILE)");
  app.add_option("--tls-key", tls_key, "Client key (default: $NATS_TLS_KEY_FILE)");
  app.add_option("--org", org,
                 "Org name; the subject prefix is org.<org> (default: $ORGD_ORG, demo)");
  app.add_option("--prefix", prefix,
                 "Subject prefix, when orgd's nats.subject_prefix is set "
                 "(default: $ORGD_PREFIX)");
  app.add_option("--timeout", timeout_seconds, "Seconds to wait for NATS and for orgd")
      ->check(CLI::Range(0.1, 600.0));
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  org_ = options_.org.empty() ? env_or("ORGD_ORG", "demo") : options_.org;
  prefix_ = options_.prefix.empty() ? env_or("ORGD_PREFIX", "org." + org_) : options_.prefix;
}

ExitCode Client::connect() {
  NatsConnectionSettings s;
  std::string servers = options_.server;
  if (servers.empty()) servers = env_or("NATS_URLS", env_or("NATS_URL", "nats://127.0.0.1:4222"));
  for (auto& url : split_urls(servers)) {
    if (!url.empty()) s.urls.push_back(std::move(url));
  }
  s.name = "orgctl";
  s.creds_file = options_.creds.empty() ? env_or("NATS_CREDS_FILE", "") : options_.creds;
  std::string nkey_file = options_.nkey.empty() ? env_or("NATS_NKEY_FILE", "") : options_.nkey;
  s.tls.ca_file = options_.tls_ca.empty() ? env_or("NATS_TLS_CA_FILE", "") : options_.tls_ca;
  s.tls.cert_file =
      options_.tls_cert.empty() ? env_or("NATS_TLS_CERT_FILE", "") : options_.tls_cert;
  s.tls.key_file = options_.tls_key.empty() ? env_or("NATS_TLS_KEY_FILE", "") : options_.tls_key;
  if (s.creds_file.empty()) {
    s.jwt = Secret::take(env_or("NATS_JWT", ""));
    s.jwt_seed = Secret::take(env_or("NATS_NKEY_SEED", ""));
  }
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_seconds * 1000));
  s.connect_timeout = std::min(timeout, std::chrono::milliseconds(5000));
  s.retry_on_failed_connect = false;
  s.max_reconnect = 0;
  try {
    if (!nkey_file.empty()) s.nkey_seed = Secret::take(nkeys::read_seed_file(nkey_file));
    nats_ = std::make_unique<NatsConnection>(std::move(s));
    nats_->connect();
  } catch (const std::exception& e) {
    std::cerr << "orgctl: " << e.what() << "\n";
    return ExitCode::unreachable;
  }
  return ExitCode::ok;
}

std::chrono::milliseconds Client::timeout() const {
  return std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_seconds * 1000));
}

CallResult Client::request(const std::string& subject, const std::string& body,
                           const std::string& what) {
  BusMessage msg;
  msg.subject = subject;
  msg.data = body;
  msg.headers.emplace_back("Content-Type", "application/json");
  auto reply = nats_->request(msg, timeout());
  CallResult result;
  if (!reply.ok()) {
    result.code = ExitCode::unreachable;
    result.error = fmt::format("orgd did not answer {} ({}); is orgd running for org '{}'?", what,
                               reply.error().message, org_);
    return result;
  }
  if (auto code = reply.value().header("Nats-Service-Error-Code")) {
    result.code = ExitCode::failed;
    result.error = fmt::format("{}: {} (error {})", what,
                               reply.value().header("Nats-Service-Error").value_or("error"), *code);
    result.service_code = std::atoi(code->c_str());
    return result;
  }
  result.body = std::move(reply.value().data);
  return result;
}

CallResult Client::call_quietly(const std::string& op,
                                const google::protobuf::Message& request_message,
                                google::protobuf::Message& reply) {
  auto result = request(prefix_ + ".api." + op, encode(request_message, Encoding::json), op);
  if (result.code != ExitCode::ok) return result;
  if (auto decoded = decode(result.body, Encoding::json, reply, 64 * 1024 * 1024); !decoded.ok()) {
    result.code = ExitCode::failed;
    result.error = "unexpected reply to " + op + ": " + decoded.error().message;
  }
  return result;
}

ExitCode Client::call(const std::string& op, const google::protobuf::Message& request_message,
                      google::protobuf::Message& reply, bool print_json) {
  auto result = call_quietly(op, request_message, reply);
  if (result.code != ExitCode::ok) {
    std::cerr << "orgctl: " << result.error << "\n";
  } else if (print_json) {
    std::cout << result.body << "\n";
  }
  return result.code;
}

ExitCode Client::report_health(const std::string& repo, const std::string& service,
                               const v1::HealthReport& report) {
  auto result = request(fmt::format("{}.health.{}.{}", prefix_, repo, service),
                        encode(report, Encoding::json), "health report");
  if (result.code != ExitCode::ok) std::cerr << "orgctl: " << result.error << "\n";
  return result.code;
}

std::unique_ptr<NatsConnection::Subscription> Client::subscribe(
    const std::string& suffix, NatsConnection::MessageHandler handler) {
  auto sub = nats_->subscribe(prefix_ + "." + suffix, "", std::move(handler));
  nats_->flush(timeout());
  return sub;
}

}  // namespace orgd::cli
