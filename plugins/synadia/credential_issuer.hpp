#pragma once

// The synadia provider's credential issuer (DESIGN.md §9 rotation with `issuer:`): issue() makes
// a NATS user "<prefix>-<secret name, lower case>-<UTC stamp>" in the account's signing-key group
// and downloads its creds; revoke() revokes the user's nkey (every JWT issued before now) and
// deletes the user. The rotation engine revokes the old credential once the overlap is over.

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/plugin/provider.hpp"
#include "plugins/synadia/synadia_api.hpp"

namespace orgd::synadia {

// The creds issued last, kept for the health probe's connect when the settings name none.
class LastIssued {
 public:
  void set(const Secret& creds);
  std::optional<Secret> get() const;

 private:
  mutable std::mutex mutex_;
  std::optional<Secret> creds_;
};

// The id an issued credential is known by: "<user id>:<account id>:<user public key>" (what
// revoke needs without asking). A bare user id is accepted too (the rest is then read).
struct IssuedId {
  std::string user_id, account_id, user_public_key;
  std::string text() const;
  static IssuedId parse(const std::string& id);
};

class SynadiaCredentialIssuer final : public CredentialIssuer {
 public:
  SynadiaCredentialIssuer(std::shared_ptr<SynadiaApi> api, std::shared_ptr<LastIssued> last)
      : api_(std::move(api)), last_(std::move(last)) {}

  Result<IssuedCredential> issue(const std::string& name) override;
  // Idempotent: a user (or account) already gone is success.
  Result<Ok> revoke(const std::string& id) override;

  // "<prefix>-<name lower case, _ as ->-<YYYYMMDDTHHMMSSZ>".
  static std::string user_name(const std::string& prefix, const std::string& secret_name,
                               Clock::time_point now);

 private:
  std::shared_ptr<SynadiaApi> api_;
  std::shared_ptr<LastIssued> last_;
};

}  // namespace orgd::synadia
