#include "plugins/synadia/health_probe.hpp"

#include <fmt/format.h>
#include <nats/nats.h>
#include <sodium.h>

#include <cstdlib>
#include <cstring>

#include "daemon/net/https_client.hpp"

namespace orgd::synadia {

namespace {

// The JWT and seed nats.c's callbacks hand out while one connect lasts.
struct ConnectCredentials {
  std::string jwt;
  std::string seed;
  ~ConnectCredentials() { sodium_memzero(seed.data(), seed.size()); }

  static natsStatus user_jwt(char** jwt, char** err_text, void* closure) {
    (void)err_text;
    auto* self = static_cast<ConnectCredentials*>(closure);
    *jwt = strdup(self->jwt.c_str());
    return *jwt != nullptr ? NATS_OK : NATS_NO_MEMORY;
  }
  static natsStatus sign(char** err_text, unsigned char** signature, int* length,
                         const char* nonce, void* closure) {
    auto* self = static_cast<ConnectCredentials*>(closure);
    const natsStatus s = nats_Sign(self->seed.c_str(), nonce, signature, length);
    if (s != NATS_OK && err_text != nullptr) *err_text = strdup("signing the server nonce failed");
    return s;
  }
};

std::string nats_error(natsStatus s) {
  const char* last = nats_GetLastError(nullptr);
  std::string text = natsStatus_GetText(s);
  if (last != nullptr && *last != '\0' && text != last) text += ": " + std::string(last);
  return text;
}

}  // namespace

Result<std::string> try_nats_connect(const std::string& url, const Secret& creds,
                                     std::chrono::milliseconds timeout) {
  ConnectCredentials parts;
  {
    CredsParts split = split_creds(creds.expose());
    parts.jwt = std::move(split.jwt);
    parts.seed = std::move(split.seed);
    sodium_memzero(split.seed.data(), split.seed.size());
  }
  if (parts.jwt.empty() || parts.seed.empty()) {
    return permanent(invalid_argument("connecting to " + url + ": the creds are not a creds file"));
  }
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, static_cast<int64_t>(timeout.count()));
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, false);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, 0);
  if (s == NATS_OK && url.rfind("tls://", 0) == 0) s = natsOptions_SetSecure(opts, true);
  if (s == NATS_OK) {
    s = natsOptions_SetUserCredentialsCallbacks(opts, &ConnectCredentials::user_jwt, &parts,
                                                &ConnectCredentials::sign, &parts);
  }
  natsConnection* conn = nullptr;
  if (s == NATS_OK) s = natsConnection_Connect(&conn, opts);
  std::string result;
  if (s == NATS_OK) {
    char server[256] = {0};
    if (natsConnection_GetConnectedServerId(conn, server, sizeof server) == NATS_OK) {
      result = server;
    }
  } else {
    result = nats_error(s);
  }
  if (conn != nullptr) {
    natsConnection_Close(conn);
    natsConnection_Destroy(conn);
  }
  if (opts != nullptr) natsOptions_Destroy(opts);
  if (s != NATS_OK) return unavailable("connecting to " + url + ": " + result);
  return result;
}

Result<ProbeResult> SynadiaHealthProbe::probe() {
  ProbeResult r;
  r.ok = true;
  std::string detail;
  auto fail = [&](const std::string& message) {
    r.ok = false;
    if (!detail.empty()) detail += "; ";
    detail += message;
    r.last_error = message;
  };
  const Settings& settings = api_->settings();
  auto ids = api_->resolve();
  if (!ids) {
    fail(ids.error().message);
  } else {
    // The token: one cheap GET each probe (resolve() keeps its ids).
    auto system = api_->get_system(ids.value().system_id);
    if (!system) {
      fail(system.error().message);
    } else {
      std::string system_name = string_field(system.value(), "name");
      detail = fmt::format("system {} account {}",
                           system_name.empty() ? ids.value().system_id : system_name,
                           ids.value().account_name.empty() ? ids.value().account_id
                                                            : ids.value().account_name);
      // Quotas: the account's limits and its usage; a failure here is not the probe's.
      auto account = api_->get_account(ids.value().account_id);
      auto metrics = api_->account_metrics(ids.value().account_id);
      r.quotas = read_quotas(account ? account.value() : nlohmann::json::object(),
                             metrics ? metrics.value() : nlohmann::json::object());
      if (!metrics) r.last_error = metrics.error().message;
    }
  }
  if (!settings.nats_url.empty()) {
    std::optional<Result<Secret>> creds = creds_ ? creds_() : std::nullopt;
    if (!creds && last_) {
      if (auto issued = last_->get()) creds = Result<Secret>(std::move(*issued));
    }
    if (!creds) {
      detail += (detail.empty() ? "" : "; ") + std::string("NATS connect not tried (no creds yet)");
    } else if (!creds->ok()) {
      fail("NATS creds: " + creds->error().message);
    } else {
      auto connected = try_nats_connect(settings.nats_url, creds->value(), connect_timeout);
      if (!connected) {
        fail(connected.error().message);
      } else {
        detail += (detail.empty() ? "" : "; ") + std::string("NATS connect ok");
      }
    }
  }
  r.detail = detail;
  if (auto transport = api_->transport(); transport) {
    if (const auto status = http_client_status(*transport.value())) {
      r.circuit = status->circuit;
      if (r.last_error.empty()) r.last_error = status->last_error;
    }
  }
  return r;
}

}  // namespace orgd::synadia
