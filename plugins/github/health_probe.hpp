#pragma once

// The github provider's health probe (issue 8, item 6): GET /rate_limit with the provider's
// credentials tells both whether they are valid and how much of the primary rate limit is left.
// /rate_limit does not count against the primary limit (cloud-apis.md §1.5).

#include <functional>
#include <memory>
#include <mutex>

#include "daemon/core/clock.hpp"
#include "daemon/net/http_transport.hpp"
#include "daemon/plugin/provider.hpp"
#include "plugins/github/auth.hpp"
#include "plugins/github/github_settings.hpp"

namespace orgd::github {

class GithubHealthProbe final : public HealthProbe {
 public:
  // What the probe needs, built on first use: a missing token or key file is the probe's
  // finding, not a reason for orgd not to start.
  struct Client {
    std::shared_ptr<HttpTransport> transport;
    std::shared_ptr<GithubAuth> auth;
  };
  using ClientFactory = std::function<Result<Client>()>;

  GithubHealthProbe(Settings settings, ClientFactory make_client,
                    std::shared_ptr<const Clock> clock);

  // ok when GitHub answers 200; the rate-limit fields from `resources.core` (the form both API
  // versions share). A 401 invalidates the credential, so the next call gets a fresh App token.
  Result<ProbeResult> probe() override;

 private:
  Result<ProbeResult> probe_with(Client& client);

  const Settings settings_;
  const ClientFactory make_client_;
  const std::shared_ptr<const Clock> clock_;
  std::mutex mutex_;  // guards client_
  std::optional<Client> client_;
};

}  // namespace orgd::github
