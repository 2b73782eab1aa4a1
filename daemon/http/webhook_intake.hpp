#pragma once

// POST /webhooks/github (DESIGN.md §4, §6; cloud-apis.md §1.6): a delivery is verified
// (X-Hub-Signature-256 against each configured secret), checked (X-GitHub-Event and
// X-GitHub-Delivery present, a JSON body), and re-published on github.<owner>.<repo>.<event>
// into stream GITHUB_EVENTS with Nats-Msg-Id "<hook id>:<delivery id>", so a redelivery is kept
// once. The 2xx goes out only once JetStream has acknowledged the message: GitHub does not
// redeliver on its own, so a 2xx must mean the delivery is stored.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/log_limiter.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/http/http_server.hpp"

namespace orgd {

inline constexpr const char* kGithubWebhookPath = "/webhooks/github";
// GitHub caps payloads at 25 MB and does not deliver larger ones; orgd refuses larger bodies
// before reading them.
inline constexpr std::size_t kGithubWebhookMaxBody = 25u * 1024 * 1024;

// Where verified deliveries go: JetStream in the daemon (webhook_jetstream.hpp), a stub in
// tests.
class WebhookSink {
 public:
  struct Stored {
    bool duplicate = false;  // the stream had the Nats-Msg-Id already (a redelivery)
  };
  virtual ~WebhookSink() = default;
  // Publishes and waits for the stream's ack, at most `timeout`. unavailable when NATS is not
  // connected (at once) or the ack did not come.
  virtual Result<Stored> store(const BusMessage& message, std::chrono::milliseconds timeout) = 0;
  // The largest message (body and headers) the bus takes now; 0 when unknown.
  virtual std::size_t max_message_bytes() const = 0;
};

// A workflow_run delivery with action "completed": what a waiting GitHub deploy step needs.
struct WorkflowRunCompleted {
  std::string owner;  // as GitHub wrote them in repository.full_name
  std::string repo;
  std::int64_t run_id = 0;
  std::string conclusion;  // success, failure, cancelled, timed_out, ... ("" when null)
  std::string delivery;    // X-GitHub-Delivery
};

struct WebhookSecret {
  std::string provider;  // the github provider it belongs to
  Secret secret;
};

struct WebhookIntakeSettings {
  std::vector<WebhookSecret> secrets;
  std::size_t max_body = kGithubWebhookMaxBody;
  // The longest the handler waits for JetStream's ack: well under GitHub's 10 s.
  std::chrono::milliseconds publish_timeout{4000};
  // Handlers waiting for an ack at once. A handler waits on an HTTP io thread, so this bounds
  // how many of them a stalled NATS can hold; beyond it a delivery gets 503 at once.
  int max_waiting = 2;
};

class WebhookIntake {
 public:
  using WorkflowRunListener = std::function<void(const WorkflowRunCompleted&)>;

  WebhookIntake(WebhookIntakeSettings settings, WebhookSink& sink, MetricsRegistry& metrics);

  // POST /webhooks/github. Runs on an HTTP io thread; waits only for the publish's ack.
  HttpServerResponse handle(const HttpServerRequest& request);

  // Called on the HTTP io thread after a completed workflow_run is stored (not for a
  // redelivery): must not block (copy and post).
  void add_workflow_run_listener(WorkflowRunListener listener);

  bool has_secrets() const { return !settings_.secrets.empty(); }

 private:
  HttpServerResponse reject(int status, const char* reason, std::string_view why,
                            const HttpServerRequest& request);
  Counter& rejected(const char* reason);

  WebhookIntakeSettings settings_;
  WebhookSink& sink_;
  MetricsRegistry& metrics_;
  Counter* published_;
  Counter* duplicates_;
  Counter* nats_down_;
  Counter* busy_;
  std::atomic<int> waiting_{0};
  LogLimiter log_limiter_;
  std::mutex listeners_mutex_;  // guards listeners_
  std::vector<WorkflowRunListener> listeners_;
};

// The subject token for a name GitHub sent (an owner, a repo, an event): every byte but
// A-Z a-z 0-9 _ - written as %XX (upper-case hex), so '.', '*', '>', spaces and '%' itself can
// never split or widen a subject, and two different names never share a token. Empty → "_".
std::string subject_token(std::string_view name);

// github.<owner>.<repo>.<event> for a delivery, owner and repo lower-cased (GitHub treats them
// case-insensitively) and each made a token by subject_token(). Events without a repository
// (organization-level ones) use the organization's login, else the installation account's,
// as owner and "_" as repo; with neither, "_" for both. nullopt when the payload is not a JSON
// object or its repository is malformed.
struct DeliveryRoute {
  std::string subject;
  std::string owner, repo;  // as in the payload ("" for "_")
};
std::optional<DeliveryRoute> route_delivery(const std::string& event, const std::string& body);

}  // namespace orgd
