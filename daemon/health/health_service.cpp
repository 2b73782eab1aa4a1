#include "daemon/health/health_service.hpp"

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>
#include <string_view>

#include "daemon/bus/acked_publisher.hpp"
#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/streams.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/events/rejections.hpp"
#include "orgd/v1/health.pb.h"

namespace orgd {

std::vector<RepoHealthSpec> health_specs(const Config& config) {
  std::vector<RepoHealthSpec> out;
  for (const auto& [name, repo] : config.repos) {
    RepoHealthSpec spec;
    spec.name = name;
    spec.depends_on = repo.depends_on;
    for (const auto& [env, target] : repo.deploy) spec.envs.push_back(env);
    spec.services = repo.health.services;
    spec.ttl = repo.health.ttl;
    out.push_back(std::move(spec));
  }
  return out;
}

HealthService::HealthService(HealthServiceSettings settings, HealthRegistry& registry,
                             NatsConnection& nats, Rejections& rejections,
                             AckedPublisher& states, Publisher& events, FollowerCheck is_follower,
                             MetricsRegistry& metrics, boost::asio::io_context& io)
    : settings_(std::move(settings)),
      registry_(registry),
      nats_(nats),
      rejections_(rejections),
      states_(states),
      events_(events),
      is_follower_(std::move(is_follower)),
      io_(io) {
  reports_in_ = &metrics.counter("orgd_messages_in_total", "Inputs received, by kind",
                                 {{"kind", "health"}});
  services_gauge_ = &metrics.gauge("orgd_health_services", "Services known to the health view");
}

HealthService::~HealthService() = default;

Result<Ok> HealthService::rebuild_once() {
  // Once per process: what this orgd learned since is newer than what the stream holds.
  if (!rebuilt_) rebuild();
  rebuilt_ = true;
  return Ok{};
}

void HealthService::rebuild() {
  // The last state of every service, from the last-value stream ORGD_HEALTH, read through an
  // ephemeral push consumer that delivers the last message of each subject (one pass, however
  // many services the org has).
  auto log = logging::get("health");
  auto started = std::chrono::steady_clock::now();
  jsCtx* js = nats_.jetstream();
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&info, js, kHealthStream, nullptr, &jerr) != NATS_OK) {
    log->warn("cannot read {}: health starts empty", kHealthStream);
    return;
  }
  std::uint64_t expected = info->State.Msgs;
  jsStreamInfo_Destroy(info);
  if (expected == 0) return;

  std::string filter = settings_.prefix + ".state.health.>";
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = kHealthStream;
  so.Config.DeliverPolicy = js_DeliverLastPerSubject;
  so.Config.AckPolicy = js_AckNone;
  so.Config.MaxAckPending = -1;
  natsSubscription* sub = nullptr;
  if (js_SubscribeSync(&sub, js, filter.c_str(), nullptr, &so, &jerr) != NATS_OK) {
    log->warn("cannot read {} (error {}): health starts empty", kHealthStream,
              static_cast<int>(jerr));
    return;
  }
  natsSubscription_SetPendingLimits(sub, -1, -1);
  // Decoded here, restored in one call after: one lock and one derivation per repo, not one of
  // each per message.
  std::vector<v1::ServiceHealth> states;
  states.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(expected, 1 << 20)));
  std::size_t bad = 0;
  for (std::uint64_t i = 0; i < expected; ++i) {
    natsMsg* msg = nullptr;
    if (natsSubscription_NextMsg(&msg, sub, 2000) != NATS_OK) break;
    v1::ServiceHealth state;
    std::string_view data(natsMsg_GetData(msg),
                          static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    if (decode(data, Encoding::json, state, 1 << 20).ok()) {
      states.push_back(std::move(state));
    } else {
      ++bad;
    }
    jsMsgMetaData* meta = nullptr;
    bool last = false;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      last = meta->NumPending == 0;
      jsMsgMetaData_Destroy(meta);
    }
    natsMsg_Destroy(msg);
    if (last) break;
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  registry_.restore(states);
  const std::size_t restored = states.size();
  log->info("health rebuilt from {} in {} ms: {} services{}", kHealthStream,
            std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started)
                .count(),
            restored, bad ? fmt::format(" ({} unreadable states skipped)", bad) : std::string());
}

void HealthService::on_report(BusMessage message) {
  reports_in_->inc();
  Encoding encoding =
      encoding_from_content_type(message.header(kContentTypeHeader).value_or(std::string()));
  // P.health.<repo>.<service>
  std::string_view rest = message.subject;
  rest.remove_prefix(std::min(rest.size(), settings_.prefix.size() + sizeof(".health.") - 1));
  auto dot = rest.find('.');
  if (dot == std::string_view::npos || rest.find('.', dot + 1) != std::string_view::npos) {
    rejections_.reject(message,
                       invalid_argument("health subject must be " + settings_.prefix +
                                        ".health.<repo>.<service>"),
                       "health", encoding);
    return;
  }
  std::string_view repo = rest.substr(0, dot);
  std::string_view service = rest.substr(dot + 1);
  v1::HealthReport report;
  if (auto d = decode(message.data, encoding, report, settings_.max_payload); !d.ok()) {
    rejections_.reject(message, d.error(), "health", encoding);
    return;
  }
  auto result = registry_.report(repo, service, report);
  if (!result.ok()) {
    rejections_.reject(message, result.error(), "health", encoding);
    return;
  }
  publish_update(result.value());
  processed_.fetch_add(1, std::memory_order_relaxed);
  if (!message.reply.empty()) {
    BusMessage ack;
    ack.subject = message.reply;
    ack.data = encoding == Encoding::json ? "{}" : "";
    ack.headers.emplace_back(std::string(kContentTypeHeader), std::string(content_type(encoding)));
    (void)nats_.publish(ack);
  }
}

void HealthService::publish_update(const HealthRegistry::Update& update) {
  // Every replica ingests every report and keeps the same picture; the scheduler lease holder
  // alone publishes the changes, so ORGD_HEALTH and ORGD_EVENTS get one copy, not one per replica.
  if (is_follower_ && is_follower_()) return;
  if (update.service) {
    BusMessage state;
    state.subject = fmt::format("{}.state.health.{}.{}", settings_.prefix,
                                update.service->repo(), update.service->service());
    state.data = encode(*update.service, Encoding::json);
    // Acknowledged and ordered per service: an older state never lands after a newer one.
    (void)states_.publish_latest(state);
  }
  if (update.repo_change) {
    BusMessage event;
    event.subject =
        fmt::format("{}.events.health.{}.changed", settings_.prefix, update.repo_change->repo());
    event.data = encode(*update.repo_change, Encoding::json);
    if (auto sent = events_.publish(event); !sent) {
      logging::get("health")->warn("event {} not published: {}", event.subject,
                                   sent.error().message);
    }
    logging::get("health")->info(
        "repo {} is {} (was {}, by {})", update.repo_change->repo(),
        v1::Health::Status_Name(update.repo_change->health()),
        v1::Health::Status_Name(update.repo_change->previous()), update.repo_change->service());
  }
}

void HealthService::start_sweep() { schedule_sweep(); }

void HealthService::schedule_sweep() {
  if (!sweep_timer_) sweep_timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  sweep_timer_->expires_after(settings_.sweep_interval);
  sweep_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    for (const auto& update : registry_.sweep()) {
      if (rebuilt_) publish_update(update);
    }
    schedule_sweep();
  });
}

void HealthService::stop_sweep() {
  stopping_ = true;
  if (sweep_timer_) boost::asio::post(io_, [this] { sweep_timer_->cancel(); });
}

void HealthService::refresh_gauges() {
  services_gauge_->set(static_cast<double>(registry_.service_count()));
}

}  // namespace orgd
