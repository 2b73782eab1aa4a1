#pragma once

// The cloudflare provider's health probe (cloud-apis.md §2.2): the token verified with
// GET /accounts/{account_id}/tokens/verify (an account token), else GET /user/tokens/verify (a
// user token); ok when Cloudflare says the token is active. The detail names the token's id,
// which kind it is and when it expires; the rate-limit budget, the circuit and the last error
// come from the provider's HTTP client.

#include <atomic>
#include <memory>

#include "daemon/plugin/provider.hpp"
#include "plugins/cloudflare/rest_client.hpp"

namespace orgd::cloudflare {

struct TokenStatus {
  std::string id;
  std::string status;      // active | disabled | expired
  std::string expires_on;  // as Cloudflare wrote it; "" when it never expires
  bool account = false;    // verified as an account token
};

class CloudflareHealthProbe final : public HealthProbe {
 public:
  explicit CloudflareHealthProbe(std::shared_ptr<RestClient> api) : api_(std::move(api)) {}
  Result<ProbeResult> probe() override;
  // The token as Cloudflare verifies it: the account endpoint first, then the user one (the
  // other way round with `user_first`).
  static Result<TokenStatus> verify(RestClient& api, bool user_first = false);

 private:
  std::shared_ptr<RestClient> api_;
  // The token verified as a user token before: its endpoint is asked first, so a probe costs
  // one call.
  std::atomic<bool> user_token_{false};
};

}  // namespace orgd::cloudflare
