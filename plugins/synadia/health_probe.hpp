#pragma once

// The synadia provider's health probe: the token (GET the system; the settings' names resolved
// to ids on first use), the account's JetStream limits and usage as quotas (the account's
// jwt_settings and GET /accounts/{id}/metrics, read tolerantly), and, when nats_url is set, a
// connect to the managed NATS with the configured creds (creds_env / creds_file, else the
// creds this provider issued last). The circuit and the last error come from the HTTP client.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/provider_services.hpp"
#include "plugins/synadia/credential_issuer.hpp"
#include "plugins/synadia/synadia_api.hpp"

namespace orgd::synadia {

// Connects to `url` with `creds` (a .creds file's text) and closes again; the error names the
// URL and what the server or the library said, never the creds.
Result<std::string> try_nats_connect(const std::string& url, const Secret& creds,
                                     std::chrono::milliseconds timeout);

class SynadiaHealthProbe final : public HealthProbe {
 public:
  // The creds for the connect: from the settings' env var or file; nullopt when none is set.
  using CredsGetter = std::function<std::optional<Result<Secret>>()>;

  SynadiaHealthProbe(std::shared_ptr<SynadiaApi> api, CredsGetter creds,
                     std::shared_ptr<LastIssued> last)
      : api_(std::move(api)), creds_(std::move(creds)), last_(std::move(last)) {}
  Result<ProbeResult> probe() override;

  std::chrono::milliseconds connect_timeout{5'000};

 private:
  std::shared_ptr<SynadiaApi> api_;
  CredsGetter creds_;
  std::shared_ptr<LastIssued> last_;
};

}  // namespace orgd::synadia
