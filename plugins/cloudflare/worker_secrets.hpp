#pragma once

// A Worker's secrets as a secret target (cloud-apis.md §2.5): list (GET …/secrets, one page of
// {name, type}, no values), put (PUT …/secrets {name, text, type: secret_text}) and remove
// (DELETE …/secrets/{name}). Each put or remove makes Cloudflare create a new version of the
// Worker with the change and deploy it at 100%. While the Worker's latest version is not
// deployed (a gradual deploy between its steps), Cloudflare refuses secret edits; that refusal
// is a retryable error that says so, and the secrets engine's next sync pushes the secret.

#include <memory>
#include <string>
#include <vector>

#include "daemon/plugin/provider.hpp"
#include "plugins/cloudflare/rest_client.hpp"

namespace orgd::cloudflare {

// Whether a refused secret edit is Cloudflare's "the latest version of your Worker isn't
// currently deployed" (its code is not documented: the message is what is recognised).
bool latest_version_not_deployed(const Envelope& envelope);

// Worker secret names: letters, digits and _, not starting with a digit, at most 256 bytes;
// values at most 5 KiB (Cloudflare's limits, cloud-apis.md §2.4).
inline constexpr std::size_t kMaxWorkerSecretBytes = 5 * 1024;

class WorkerSecretTarget final : public SecretTarget {
 public:
  WorkerSecretTarget(std::shared_ptr<RestClient> api, std::string script);

  std::string describe() const override;
  Result<std::vector<SecretInfo>> list() override;
  Result<Ok> put(const std::string& name, const Secret& value) override;
  Result<Ok> remove(const std::string& name) override;

 private:
  std::string base() const;  // /accounts/<id>/workers/scripts/<script>/secrets
  Result<Ok> check(const std::string& what, Result<Envelope> answer);

  std::shared_ptr<RestClient> api_;
  std::string script_;
};

}  // namespace orgd::cloudflare
