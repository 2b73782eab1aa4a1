#pragma once

// GitHub Actions secrets as a secret target (cloud-apis.md §1.3): a repository's, one of its
// environments', or the organization's (visibility all, private or selected repositories).
// Names and values are checked before any call; a value is sealed to the scope's public key,
// which is fetched once and cached by key_id, and fetched again when GitHub refuses it (a
// rotated key). Listing follows every page.

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/config.hpp"
#include "daemon/plugin/provider.hpp"
#include "plugins/github/rest_client.hpp"

namespace orgd::github {

struct SecretPlace {
  enum class Scope { repository, environment, organization };
  Scope scope = Scope::repository;
  std::string owner;
  std::string repo;         // repository and environment scopes
  std::string environment;  // environment scope
  // Organization scope: all | private | selected, and the repositories (names) of `selected`.
  std::string visibility = "private";
  std::vector<std::string> selected_repos;
};

// repos.<repo>.secret_targets[i] of a github provider: `repo` (default: the repo's name),
// `environment` (environment secrets), or `org: true` (the owner's organization secrets, with
// `visibility` and `selected_repos`). ConfigError naming file:line:key.
SecretPlace parse_secret_place(const SecretTargetConfig& target, const std::string& source_file,
                               const Settings& settings);

class ActionsSecretTarget final : public SecretTarget {
 public:
  ActionsSecretTarget(std::shared_ptr<RestClient> api, SecretPlace place);

  std::string describe() const override;
  Result<std::vector<SecretInfo>> list() override;
  Result<Ok> put(const std::string& name, const Secret& value) override;
  Result<Ok> remove(const std::string& name) override;

  // Public keys fetched so far (a rotation refetches once).
  int keys_fetched() const;

 private:
  struct PublicKey {
    std::string key_id;
    std::string key;  // base64 of 32 bytes
  };
  std::string base() const;  // ".../actions/secrets" or ".../environments/<env>/secrets"
  Result<PublicKey> public_key(bool refresh);
  Result<std::vector<std::int64_t>> selected_repository_ids();
  Result<Ok> put_with(const std::string& name, const PublicKey& key, const Secret& value);

  std::shared_ptr<RestClient> api_;
  SecretPlace place_;
  mutable std::mutex mutex_;  // guards key_, fetched_, repo_ids_
  std::optional<PublicKey> key_;
  int fetched_ = 0;
  std::optional<std::vector<std::int64_t>> repo_ids_;
};

}  // namespace orgd::github
