// Webhook deliveries as GitHub makes them (cloud-apis.md §1.6), for tests of orgd's receiver.

#include <openssl/hmac.h>

#include <stdexcept>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing {

using namespace github_fake;

std::string hub_signature_256(std::string_view secret, std::string_view body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[mac[i] >> 4]);
    out.push_back(hex[mac[i] & 0xF]);
  }
  return out;
}

std::string FakeWebhookDelivery::header(std::string_view name) const {
  FakeRequest r;
  r.headers = headers;
  return r.header(name);
}

FakeWebhookDelivery webhook_delivery(const std::string& event, const nlohmann::json& payload,
                                     std::string_view secret, const std::string& delivery_id,
                                     std::int64_t hook_id) {
  FakeWebhookDelivery d;
  d.body = payload.dump();
  const bool org = payload.contains("organization") && !payload.contains("repository");
  std::string target_id = "0";
  if (payload.contains("repository") && payload["repository"].contains("id")) {
    target_id = payload["repository"]["id"].dump();
  }
  d.headers = {
      {"Content-Type", "application/json"},
      {"User-Agent", "GitHub-Hookshot/044aadd"},
      {"X-GitHub-Event", event},
      {"X-GitHub-Delivery", delivery_id},
      {"X-GitHub-Hook-ID", std::to_string(hook_id)},
      {"X-GitHub-Hook-Installation-Target-Type", org ? "organization" : "repository"},
      {"X-GitHub-Hook-Installation-Target-ID", target_id},
      {"X-Hub-Signature-256", hub_signature_256(secret, d.body)},
  };
  return d;
}

json FakeGithub::workflow_run_event(std::int64_t run_id) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->runs.find(run_id);
  if (it == state_->runs.end()) throw std::out_of_range("no run " + std::to_string(run_id));
  const FakeRun& run = it->second;
  const std::string base = state_->base_url.empty() ? "https://api.github.com" : state_->base_url;
  const std::string action = run.status == "completed"     ? "completed"
                             : run.status == "in_progress" ? "in_progress"
                                                           : "requested";
  const std::int64_t repo_id = state_->repo_id(run.owner, run.repo);
  return json{{"action", action},
              {"workflow_run", run_json(run, base)},
              {"workflow", {{"name", run.name}, {"path", ".github/workflows/" + run.workflow}}},
              {"repository",
               {{"id", repo_id},
                {"name", run.repo},
                {"full_name", run.owner + "/" + run.repo},
                {"owner", {{"login", run.owner}}}}},
              {"sender", {{"login", "orgd-bot"}}}};
}

}  // namespace orgd::testing
