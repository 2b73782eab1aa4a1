#include "plugins/synadia/credential_issuer.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <cctype>
#include <ctime>

namespace orgd::synadia {

void LastIssued::set(const Secret& creds) {
  std::lock_guard lock(mutex_);
  creds_ = creds.clone();
}

std::optional<Secret> LastIssued::get() const {
  std::lock_guard lock(mutex_);
  if (!creds_) return std::nullopt;
  return creds_->clone();
}

std::string IssuedId::text() const {
  return user_id + ":" + account_id + ":" + user_public_key;
}

IssuedId IssuedId::parse(const std::string& id) {
  IssuedId out;
  const auto first = id.find(':');
  if (first == std::string::npos) {
    out.user_id = id;
    return out;
  }
  out.user_id = id.substr(0, first);
  const auto second = id.find(':', first + 1);
  if (second == std::string::npos) {
    out.account_id = id.substr(first + 1);
    return out;
  }
  out.account_id = id.substr(first + 1, second - first - 1);
  out.user_public_key = id.substr(second + 1);
  return out;
}

std::string SynadiaCredentialIssuer::user_name(const std::string& prefix,
                                               const std::string& secret_name,
                                               Clock::time_point now) {
  std::string name;
  for (const unsigned char c : secret_name) {
    if (std::isalnum(c) != 0) {
      name.push_back(static_cast<char>(std::tolower(c)));
    } else if (!name.empty() && name.back() != '-') {
      name.push_back('-');
    }
  }
  while (!name.empty() && name.back() == '-') name.pop_back();
  const std::time_t t = std::chrono::system_clock::to_time_t(
      std::chrono::time_point_cast<std::chrono::system_clock::duration>(now));
  std::tm utc{};
  gmtime_r(&t, &utc);
  return fmt::format("{}-{}-{:%Y%m%dT%H%M%SZ}", prefix, name.empty() ? "secret" : name, utc);
}

Result<IssuedCredential> SynadiaCredentialIssuer::issue(const std::string& name) {
  auto ids = api_->resolve();
  if (!ids) return ids.error();
  const std::string user_name =
      SynadiaCredentialIssuer::user_name(api_->settings().user_name_prefix, name,
                                         api_->clock().now());
  auto user = api_->create_user(ids.value().account_id, user_name, ids.value().sk_group_id);
  if (!user && user.error().code == ErrorCode::not_found) {
    // The account or group went away behind orgd's back: resolve again (once).
    api_->forget();
    ids = api_->resolve();
    if (!ids) return ids.error();
    user = api_->create_user(ids.value().account_id, user_name, ids.value().sk_group_id);
  }
  if (!user) return user.error();
  NatsUser& made = user.value();
  auto creds = api_->download_creds(made.id);
  if (!creds) {
    // A user whose creds orgd never got is of no use: do not leave it behind.
    (void)api_->delete_user(made.id);
    return creds.error();
  }
  IssuedCredential out;
  out.id = IssuedId{made.id, made.account_id.empty() ? ids.value().account_id : made.account_id,
                    made.user_public_key}
               .text();
  out.expires_at = made.expires_at;
  if (!out.expires_at) out.expires_at = jwt_expiry(split_creds(creds.value().expose()).jwt);
  if (last_) last_->set(creds.value());
  out.value = std::move(creds).value();
  return out;
}

Result<Ok> SynadiaCredentialIssuer::revoke(const std::string& id) {
  IssuedId issued = IssuedId::parse(id);
  if (issued.user_id.empty()) return permanent(invalid_argument("empty Synadia credential id"));
  if (issued.user_public_key.empty() || issued.account_id.empty()) {
    auto user = api_->get_user(issued.user_id);
    if (!user) {
      if (user.error().code == ErrorCode::not_found) return Ok{};  // already gone
      return user.error();
    }
    issued.user_public_key = user.value().user_public_key;
    if (issued.account_id.empty()) issued.account_id = user.value().account_id;
  }
  // DELETE is not documented to revoke the user's outstanding JWTs: revoke first, then delete.
  if (!issued.user_public_key.empty() && !issued.account_id.empty()) {
    auto revoked = api_->revoke_user(issued.account_id, issued.user_public_key);
    // An account that is gone took its users with it.
    if (!revoked && revoked.error().code != ErrorCode::not_found) return revoked.error();
  }
  auto deleted = api_->delete_user(issued.user_id);
  if (!deleted && deleted.error().code != ErrorCode::not_found) return deleted.error();
  return Ok{};
}

}  // namespace orgd::synadia
