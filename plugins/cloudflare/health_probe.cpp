#include "plugins/cloudflare/health_probe.hpp"

#include <fmt/format.h>

#include "daemon/net/https_client.hpp"

namespace orgd::cloudflare {

Result<TokenStatus> CloudflareHealthProbe::verify(RestClient& api, bool user_first) {
  std::string refused;
  bool first = true;
  for (const bool account : {!user_first, user_first}) {
    const std::string what =
        account ? "verifying the token as an account token" : "verifying the token as a user token";
    RestClient::Request request;
    request.path = account ? api.account_path() + "/tokens/verify" : "/user/tokens/verify";
    // No answer (or a rate limit) is the finding: the other endpoint would fare no better.
    auto answer = api.exchange(what, request);
    if (!answer) return answer.error();
    const Envelope& e = answer.value();
    if (!e.success || e.status / 100 != 2) {
      Error error = envelope_error(what, e);
      if (error.retry == Retry::rate_limited) return error;
      // An account token is refused by /user/tokens/verify and a user token by the account's
      // endpoint: only both refusals say the token is no good.
      if (first) {
        refused = error.message;
        first = false;
        continue;
      }
      error.message = refused + "; " + error.message;
      return error;
    }
    TokenStatus status{string_field(e.result, "id"), string_field(e.result, "status"),
                       string_field(e.result, "expires_on"), account};
    if (status.status.empty()) return unavailable(what + ": Cloudflare's result has no status");
    return status;
  }
  return unavailable(refused);
}

Result<ProbeResult> CloudflareHealthProbe::probe() {
  ProbeResult r;
  auto token = verify(*api_, user_token_.load());
  if (token) user_token_ = !token.value().account;
  if (!token) {
    r.ok = false;
    r.detail = token.error().message;
    r.last_error = token.error().message;
  } else {
    const TokenStatus& t = token.value();
    r.ok = t.status == "active";
    r.detail = fmt::format("{} token {} {}{}", t.account ? "account" : "user",
                           t.id.empty() ? std::string{"(no id)"} : t.id, t.status,
                           t.expires_on.empty() ? ", no expiry" : ", expires " + t.expires_on);
    if (!r.ok) r.last_error = "the API token is " + t.status;
  }
  if (auto transport = api_->transport(); transport) {
    if (const auto status = http_client_status(*transport.value())) {
      r.circuit = status->circuit;
      if (r.last_error.empty()) r.last_error = status->last_error;
      r.rate_limit_remaining = status->rate_remaining;
      r.rate_limit_limit = status->rate_limit;
      r.rate_limit_reset = status->rate_reset;
    }
  }
  return r;
}

}  // namespace orgd::cloudflare
