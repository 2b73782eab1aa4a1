#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

// The provider SPI, version 2 (DESIGN.md §8). A provider offers capabilities — deploy targets,
// secret targets, a credential issuer, a health probe — each null when absent; the orchestrator
// and the secrets engine see only these interfaces, so a new provider drops in without touching
// either. Providers take validated settings and the services they are given
// (daemon/plugin/provider_services.hpp), never raw config, globals or getenv. Every call runs
// under a deadline (the context's); a call past it fails the attempt and keeps its thread.
namespace orgd {

// The last successful deploy of a repo+env before the current one: what a rollback returns to.
struct PreviousDeploy {
  std::string deploy_id;
  std::string ref;
  std::string handle;
};

struct DeployContext {
  std::string repo, env, ref, deploy_id;
  int attempt = 1;
  // The provider's id of this attempt's deploy as the record holds it (poll, cancel, advance;
  // empty before start returned one).
  std::string handle;
  // Gated phases the step has passed (0: none). advance() is asked to start phase `phase` + 1.
  int phases_passed = 0;
  // rollback: the repo+env's last successful deploy before this one, when orgd knows of it.
  std::optional<PreviousDeploy> previous;
  // The latest this call may return; a provider bounds its own waits and API calls by it.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// `interrupted` (from recover() only): the attempt ended because orgd stopped or died while it
// ran (an exec command killed with orgd), not because the deploy failed; the orchestrator runs
// the step again as a new attempt that does not count against its retries.
// `phase_done`: a gated phase of a gradual rollout is out (10% of traffic): orgd runs the step's
// health gate, then calls advance() for the next phase, or rollback() when the gate fails.
enum class DeployStatus { running, succeeded, failed, interrupted, phase_done };

constexpr std::string_view status_name(DeployStatus status) {
  switch (status) {
    case DeployStatus::running: return "running";
    case DeployStatus::succeeded: return "succeeded";
    case DeployStatus::failed: return "failed";
    case DeployStatus::interrupted: return "interrupted";
    case DeployStatus::phase_done: return "phase_done";
  }
  return "running";
}

struct DeployProgress {
  DeployProgress() = default;
  DeployProgress(DeployStatus status_, std::string handle_ = {}, std::string error_ = {})
      : status(status_), handle(std::move(handle_)), error(std::move(error_)) {}

  DeployStatus status = DeployStatus::running;
  // The provider's id of the started deploy (poll, cancel, rollback, resume use it). A handle
  // first learnt in poll() is written to the record, so a resumed step does not search again.
  std::string handle;
  std::string error;  // set when failed or interrupted
  // A link for operators (the Actions run, the dashboard) and one line of what is going on
  // ("run 1234: in_progress", "10% of traffic"); shown in `orgctl deploy get` and events.
  std::string url;
  std::string detail;
  // When the provider wants to be polled again (its API's pace); unset: orgd's poll interval.
  // orgd never polls sooner than its own poll interval.
  std::optional<Duration> next_poll_after;
  // With phase_done: the phase now out (1 = the first).
  int phase = 0;
};

using LogSink = std::function<void(std::string_view line)>;

// One per repo+env target, built from validated settings. Errors carry Error::retry: a
// permanent one fails the attempt at once; a retryable or rate-limited start is tried again
// (after retry_after) within the step's timeout; poll errors are tolerated up to a bound.
class DeployTarget {
 public:
  virtual ~DeployTarget() = default;
  virtual Result<DeployProgress> start(const DeployContext& context, const LogSink& log) = 0;
  // context.handle is the deploy to ask about.
  virtual Result<DeployProgress> poll(const DeployContext& context) = 0;
  // Stops the deploy context.handle names (a cancel while it runs). The answer is the deploy's
  // state after the request: failed or running (orgd then polls until it ends).
  virtual bool can_cancel() const { return false; }
  virtual Result<DeployProgress> cancel(const DeployContext& context) {
    (void)context;
    return permanent(invalid_argument("this target cannot cancel a running deploy"));
  }
  // After a gated phase passed orgd's health gate: start the next one (context.phases_passed
  // says which passed). Only targets that report phase_done are asked.
  virtual Result<DeployProgress> advance(const DeployContext& context) {
    (void)context;
    return permanent(invalid_argument("this target has no gated phases"));
  }
  // Returns the repo+env to context.previous (the last successful deploy before this one); a
  // target that needs it says so when it is missing.
  virtual Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) = 0;
  virtual bool can_rollback() const = 0;
  // What news of a deploy names it by (Orchestrator::poll_now): the handle itself, or the part
  // of it a webhook carries (a GitHub run id where the handle also holds a Deployment id).
  virtual std::string watch_key(const std::string& handle) const { return handle; }
  // The longest a start() or rollback() can take when the provider bounds its own calls (exec
  // kills its command after `timeout`). The orchestrator then never abandons such a call sooner,
  // even with a shorter step_timeout: the work it does is still running, and a new attempt
  // beside it would run it twice at once.
  virtual std::optional<Duration> max_call_duration() const { return std::nullopt; }
  // Re-checks a step that was in flight when its orgd died, before its start was recorded with a
  // handle: what became of the deploy `context` names (deploy id, repo, env, attempt)? not_found
  // means the provider knows nothing of it and the orchestrator may start it again; interrupted
  // that it was started and ended with orgd, so it runs again as a new attempt.
  virtual Result<DeployProgress> recover(const DeployContext& context) {
    (void)context;
    return not_found("provider keeps no record of started deploys");
  }
};

// What a secret target shows of one secret: never its value.
struct SecretInfo {
  std::string name;
  // When the target last saw it change, where the target shows it (drift and rotation checks).
  std::optional<Clock::time_point> updated_at;
};

// One place secrets are pushed to (repository or environment Actions secrets, Worker secrets),
// built from validated settings.
class SecretTarget {
 public:
  virtual ~SecretTarget() = default;
  // What the target is, for plans and messages ("github acme/api environment production").
  virtual std::string describe() const = 0;
  // Every secret the target holds, all pages.
  virtual Result<std::vector<SecretInfo>> list() = 0;
  virtual Result<Ok> put(const std::string& name, const Secret& value) = 0;
  // not_found when the target has no such secret.
  virtual Result<Ok> remove(const std::string& name) = 0;
};

// A credential made by a provider for rotation (Synadia user creds): its value and the id that
// revokes it.
struct IssuedCredential {
  std::string id;
  Secret value;
  std::optional<Clock::time_point> expires_at;
};

class CredentialIssuer {
 public:
  virtual ~CredentialIssuer() = default;
  // `name` is the secret being rotated; the provider's settings say what to issue.
  virtual Result<IssuedCredential> issue(const std::string& name) = 0;
  virtual Result<Ok> revoke(const std::string& id) = 0;
};

// Where an object store keeps what orgd gives it (secrets.backup.r2: {bucket, prefix}).
struct ObjectStoreConfig {
  std::string bucket;
  std::string prefix;  // prepended to every key ("orgd/backups/"); may be empty
  int line = 0;
};

struct StoredObject {
  std::string key;  // without the prefix
  std::uint64_t size = 0;
  std::optional<Clock::time_point> modified;
};

// Objects in one bucket under one prefix (R2 through its S3 API): where the secrets engine
// writes its backups. Keys are given without the prefix.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // What the store is, for messages ("r2 acme-backups/orgd/").
  virtual std::string describe() const = 0;
  // Creates the bucket when it does not exist (once; later calls are free).
  virtual Result<Ok> ensure() = 0;
  virtual Result<Ok> put(const std::string& key, std::string_view bytes) = 0;
  // not_found when there is no such object.
  virtual Result<std::string> get(const std::string& key) = 0;
  // Every object under the prefix (+ key_prefix), all pages, sorted by key.
  virtual Result<std::vector<StoredObject>> list(const std::string& key_prefix = {}) = 0;
  virtual Result<Ok> remove(const std::string& key) = 0;
};

// One quota a provider's account shows (Synadia: JetStream storage, streams, consumers): how
// much is used and the limit, each absent when the provider does not say (a limit absent:
// unlimited or not shown).
struct ProviderQuota {
  std::string name;  // "jetstream_storage_bytes", "jetstream_streams", ...
  std::optional<std::int64_t> used;
  std::optional<std::int64_t> limit;
};

// What a provider's health probe found: its credentials, its API's budget, its client's state.
struct ProbeResult {
  bool ok = false;
  std::string detail;  // one line, no secrets
  std::optional<long> rate_limit_remaining;
  std::optional<long> rate_limit_limit;
  std::optional<Clock::time_point> rate_limit_reset;
  std::string circuit;     // closed | half_open | open; empty when the provider has no client
  std::string last_error;  // the last failed call's error, no secrets
  std::vector<ProviderQuota> quotas;  // the account's quotas, where the provider reads them
};

class HealthProbe {
 public:
  virtual ~HealthProbe() = default;
  virtual Result<ProbeResult> probe() = 0;
};

// Which capabilities a provider offers, in words for check-config and P.api.providers.
struct Capabilities {
  bool deploy_target = false;
  bool secret_target = false;
  bool credential_issuer = false;
  bool health_probe = false;
  bool object_store = false;

  std::vector<std::string> names() const;
};

class Provider {
 public:
  virtual ~Provider() = default;
  // The instance's name (providers.<name>) and its type (local, exec, ...).
  const std::string& name() const { return name_; }
  const std::string& type() const { return type_; }

  // Deploy targets: validates the per-target settings and builds one; throws ConfigError naming
  // file, line and key. Only called when capabilities().deploy_target.
  virtual std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig& target,
                                                           const std::string& source_file);
  // Secret targets, the same way. Only called when capabilities().secret_target.
  virtual std::unique_ptr<SecretTarget> make_secret_target(const SecretTargetConfig& target,
                                                           const std::string& source_file);
  // Object stores, the same way (throws ConfigError naming file, line and key). Only called
  // when capabilities().object_store.
  virtual std::unique_ptr<ObjectStore> make_object_store(const ObjectStoreConfig& config,
                                                         const std::string& source_file);
  // Null when the provider issues no credentials / has no probe.
  virtual CredentialIssuer* credential_issuer() { return nullptr; }
  virtual HealthProbe* health_probe() { return nullptr; }

  virtual Capabilities capabilities() const = 0;

 protected:
  Provider(std::string name, std::string type) : name_(std::move(name)), type_(std::move(type)) {}

 private:
  std::string name_;
  std::string type_;
};

}  // namespace orgd
