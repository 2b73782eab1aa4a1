#include "daemon/http/webhook_intake.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>

#include "daemon/core/ascii.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/http/webhook_signature.hpp"

namespace orgd {

namespace {

using nlohmann::json;

constexpr auto kRejectReasons =
    std::to_array<const char*>({"no_secret", "missing_signature", "malformed_signature",
                                "bad_signature", "missing_headers", "bad_payload", "too_large"});

// Room for the headers orgd adds to the body on the bus (the X-GitHub-* copies, the ids).
constexpr std::size_t kHeaderAllowance = 4096;

// A delivery id for the log: GitHub's are GUIDs, so anything else is cut out.
std::string loggable_id(std::string_view id) {
  std::string out;
  for (const char c : id.substr(0, 64)) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-') out.push_back(c);
  }
  return out;
}

std::string header_of(const HttpServerRequest& request, const std::string& lower_name) {
  const auto it = request.headers.find(lower_name);
  return it == request.headers.end() ? std::string{} : it->second;
}

// "x-github-hook-installation-target-id" → "X-GitHub-Hook-Installation-Target-ID", the casing
// GitHub sends, so subscribers read the headers by the names GitHub documents.
std::string github_header_name(std::string_view lowered) {
  std::string out = "X-GitHub";
  std::string_view rest = lowered.substr(std::string_view("x-github").size());
  while (!rest.empty()) {
    rest.remove_prefix(1);  // the '-'
    const auto end = std::min(rest.find('-'), rest.size());
    std::string word(rest.substr(0, end));
    if (word == "id") {
      word = "ID";
    } else if (!word.empty()) {
      word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
    }
    out += "-" + word;
    rest.remove_prefix(end);
  }
  return out;
}

// A string at obj[key], when obj is an object and it is a non-empty string.
std::optional<std::string> string_at(const json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return std::nullopt;
  }
  return it->get<std::string>();
}

const json* object_at(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? &*it : nullptr;
}

std::optional<DeliveryRoute> route_from(const std::string& event, const json& payload) {
  if (!payload.is_object()) return std::nullopt;
  DeliveryRoute route;
  if (const auto it = payload.find("repository"); it != payload.end() && !it->is_null()) {
    const auto full_name = string_at(*it, "full_name");
    if (!full_name) return std::nullopt;
    const auto slash = full_name->find('/');
    if (slash == 0 || slash == std::string::npos || slash + 1 == full_name->size() ||
        full_name->find('/', slash + 1) != std::string::npos) {
      return std::nullopt;
    }
    route.owner = full_name->substr(0, slash);
    route.repo = full_name->substr(slash + 1);
  } else if (const auto org = object_at(payload, "organization"); org && string_at(*org, "login")) {
    route.owner = *string_at(*org, "login");
  } else if (const auto installation = object_at(payload, "installation")) {
    if (const auto account = object_at(*installation, "account")) {
      route.owner = string_at(*account, "login").value_or("");
    }
  }
  route.subject = "github." + subject_token(ascii_lowered(route.owner)) + "." +
                  subject_token(ascii_lowered(route.repo)) + "." + subject_token(event);
  return route;
}

}  // namespace

std::string subject_token(std::string_view name) {
  if (name.empty()) return "_";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(name.size());
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 && u < 0x80) {
      out.push_back(c);
    } else if (c == '_' || c == '-') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0F]);
    }
  }
  return out;
}

std::optional<DeliveryRoute> route_delivery(const std::string& event, const std::string& body) {
  return route_from(event, json::parse(body, nullptr, /*allow_exceptions=*/false));
}

WebhookIntake::WebhookIntake(WebhookIntakeSettings settings, WebhookSink& sink,
                             MetricsRegistry& metrics)
    : settings_(std::move(settings)), sink_(sink), metrics_(metrics) {
  for (const char* reason : kRejectReasons) rejected(reason);
  const std::string deliveries = "orgd_webhook_deliveries_total";
  const std::string deliveries_help =
      "GitHub webhook deliveries stored in GITHUB_EVENTS, by result";
  published_ = &metrics_.counter(deliveries, deliveries_help, {{"result", "published"}});
  duplicates_ = &metrics_.counter(deliveries, deliveries_help, {{"result", "duplicate"}});
  const std::string failures = "orgd_webhook_publish_failures_total";
  const std::string failures_help =
      "Verified GitHub webhook deliveries answered 503 because they could not be stored, by reason";
  nats_down_ = &metrics_.counter(failures, failures_help, {{"reason", "nats_unavailable"}});
  busy_ = &metrics_.counter(failures, failures_help, {{"reason", "busy"}});
}

Counter& WebhookIntake::rejected(const char* reason) {
  return metrics_.counter("orgd_webhook_rejected_total",
                          "GitHub webhook deliveries refused before publishing, by reason",
                          {{"reason", reason}});
}

void WebhookIntake::add_workflow_run_listener(WorkflowRunListener listener) {
  std::lock_guard lock(listeners_mutex_);
  listeners_.push_back(std::move(listener));
}

HttpServerResponse WebhookIntake::reject(int status, const char* reason, std::string_view why,
                                         const HttpServerRequest& request) {
  rejected(reason).inc();
  std::uint64_t suppressed = 0;
  if (log_limiter_.allow(&suppressed)) {
    // The delivery id only: the body and the signature stay out of the log.
    logging::get("http")->warn(
        "webhook from {} refused ({}): {}{}{}", request.remote, status, why,
        suppressed > 0 ? fmt::format(" ({} similar lines suppressed)", suppressed) : std::string{},
        header_of(request, "x-github-delivery").empty()
            ? std::string{}
            : " [delivery " + loggable_id(header_of(request, "x-github-delivery")) + "]");
  }
  return {status, "text/plain; charset=utf-8", std::string(why) + "\n", {}};
}

HttpServerResponse WebhookIntake::handle(const HttpServerRequest& request) {
  if (request.method != "POST") {
    return {405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "POST"}}};
  }
  if (request.body.size() > settings_.max_body) {
    return reject(413, "too_large", "payload too large", request);
  }
  // Authenticity first: an unsigned request learns nothing else about what orgd expects.
  if (settings_.secrets.empty()) {
    return reject(401, "no_secret",
                  "no webhook secret is configured (webhook_secret_env of the github provider)",
                  request);
  }
  const std::string signature = header_of(request, "x-hub-signature-256");
  if (signature.empty()) {
    return reject(401, "missing_signature", "X-Hub-Signature-256 is missing", request);
  }
  const WebhookSecret* matched = nullptr;
  bool malformed = false;
  for (const auto& candidate : settings_.secrets) {
    const SignatureCheck check = check_github_signature(signature, request.body, candidate.secret);
    if (check == SignatureCheck::valid) {
      matched = &candidate;
      break;
    }
    malformed = malformed || check == SignatureCheck::malformed;
  }
  if (matched == nullptr) {
    return malformed ? reject(401, "malformed_signature",
                              "X-Hub-Signature-256 is not sha256=<64 hex digits>", request)
                     : reject(401, "bad_signature", "X-Hub-Signature-256 does not match", request);
  }

  const std::string event = header_of(request, "x-github-event");
  const std::string delivery = header_of(request, "x-github-delivery");
  if (event.empty() || delivery.empty()) {
    return reject(400, "missing_headers", "X-GitHub-Event and X-GitHub-Delivery are required",
                  request);
  }
  const json payload = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  const auto route = route_from(event, payload);
  if (!route) {
    return reject(400, "bad_payload",
                  "the body is not a JSON object with a valid repository.full_name", request);
  }
  const std::size_t bus_limit = sink_.max_message_bytes();
  if (bus_limit != 0 && request.body.size() + kHeaderAllowance > bus_limit) {
    return reject(
        413, "too_large",
        fmt::format("payload too large for the NATS server (max_payload {} bytes)", bus_limit),
        request);
  }

  BusMessage message;
  message.subject = route->subject;
  message.data = request.body;
  const std::string hook = header_of(request, "x-github-hook-id");
  // The delivery GUID is shared by every hook subscribed to the event (cloud-apis.md §1.6):
  // with the hook's id two hooks' copies stay two messages, and a redelivery stays one.
  message.set_header("Nats-Msg-Id", hook.empty() ? delivery : hook + ":" + delivery);
  for (const auto& [name, value] : request.headers) {
    if (name.rfind("x-github-", 0) == 0) message.set_header(github_header_name(name), value);
  }
  if (const auto type = header_of(request, "content-type"); !type.empty()) {
    message.set_header("Content-Type", type);
  }
  message.set_header("Orgd-Github-Provider", matched->provider);

  if (waiting_.fetch_add(1) >= settings_.max_waiting) {
    waiting_.fetch_sub(1);
    busy_->inc();
    return {503,
            "text/plain; charset=utf-8",
            "too many deliveries waiting for NATS; redeliver it later\n",
            {{"Retry-After", "1"}}};
  }
  auto stored = sink_.store(message, settings_.publish_timeout);
  waiting_.fetch_sub(1);
  if (!stored) {
    nats_down_->inc();
    std::uint64_t suppressed = 0;
    if (log_limiter_.allow(&suppressed)) {
      logging::get("http")->warn("webhook delivery {} ({}) not stored: {}", loggable_id(delivery),
                                 message.subject, stored.error().message);
    }
    return {503,
            "text/plain; charset=utf-8",
            "the delivery could not be stored (NATS unavailable); redeliver it later\n",
            {{"Retry-After", "5"}}};
  }
  if (stored.value().duplicate) {
    duplicates_->inc();
  } else {
    published_->inc();
    if (event == "workflow_run" && string_at(payload, "action") == std::string("completed")) {
      const json* run = object_at(payload, "workflow_run");
      const auto id = run != nullptr ? run->find("id") : payload.end();
      if (run != nullptr && id != run->end() && id->is_number_integer()) {
        WorkflowRunCompleted done;
        done.owner = route->owner;
        done.repo = route->repo;
        done.run_id = id->get<std::int64_t>();
        done.conclusion = string_at(*run, "conclusion").value_or("");
        done.delivery = delivery;
        std::lock_guard lock(listeners_mutex_);
        for (const auto& listener : listeners_) {
          // The delivery is stored: a failing listener must not turn its answer into a 500.
          try {
            listener(done);
          } catch (const std::exception& e) {
            logging::get("http")->error("workflow_run listener failed: {}", e.what());
          }
        }
      }
    }
  }
  const json answer = {{"subject", message.subject}, {"duplicate", stored.value().duplicate}};
  return {200, "application/json", answer.dump() + "\n", {}};
}

}  // namespace orgd
