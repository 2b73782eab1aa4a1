#include "daemon/events/api_dispatcher.hpp"

#include <boost/asio/post.hpp>

#include <string>

#include "daemon/events/codec.hpp"
#include "daemon/events/rejections.hpp"

namespace orgd {

ApiDispatcher::ApiDispatcher(ApiRouter& router, Publisher& replies, boost::asio::io_context& io,
                             ApiDispatcherSettings settings, MetricsRegistry& metrics)
    : router_(router), replies_(replies), io_(io), settings_(std::move(settings)) {
  inflight_gauge_ = &metrics.gauge("orgd_api_inflight_requests", "API requests being handled");
  // Threads for the deploy handlers: each waits on KV round trips, so a few let a burst of
  // deploy requests overlap without taking the io threads.
  constexpr int kKvThreads = 4;
  kv_pool_ = std::make_unique<boost::asio::thread_pool>(kKvThreads);
  kv_busy_ = &metrics.counter("orgd_api_kv_busy_total",
                              "Deploy API requests refused (503) because too many were waiting");
}

ApiDispatcher::~ApiDispatcher() = default;

void ApiDispatcher::on_request(std::size_t endpoint, BusMessage message) {
  // Deploy requests beyond this wait for a KV handler: the rest get 503 at once.
  constexpr std::size_t kMaxKvWaiting = 256;
  const bool kv_bound =
      endpoint < settings_.kv_endpoints.size() && settings_.kv_endpoints[endpoint];
  const bool kv_full = kv_bound && kv_waiting_.load() >= kMaxKvWaiting;
  if (stopping_ || inflight_.load() >= settings_.max_inflight || kv_full) {
    if (kv_full) kv_busy_->inc();
    if (!message.reply.empty()) {
      Encoding enc =
          encoding_from_content_type(message.header(kContentTypeHeader).value_or(std::string()));
      (void)replies_.publish(
          make_error_reply(message.reply,
                           unavailable(stopping_ ? "orgd is shutting down"
                                       : kv_full ? "orgd is busy with deploy requests; try again"
                                                 : "orgd is overloaded"),
                           enc));
    }
    return;
  }
  inflight_.fetch_add(1);
  inflight_gauge_->inc();
  if (kv_bound) kv_waiting_.fetch_add(1);
  auto handle = [this, endpoint, kv_bound, m = std::move(message)] {
    router_.dispatch(endpoint, m);
    if (kv_bound) kv_waiting_.fetch_sub(1);
    inflight_gauge_->dec();
    if (inflight_.fetch_sub(1) == 1) {
      std::lock_guard lock(inflight_mutex_);
      inflight_cv_.notify_all();
    }
  };
  if (kv_bound) {
    boost::asio::post(*kv_pool_, std::move(handle));
  } else {
    boost::asio::post(io_, std::move(handle));
  }
}

void ApiDispatcher::stop_taking() { stopping_ = true; }

void ApiDispatcher::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(inflight_mutex_);
  inflight_cv_.wait_until(lock, deadline, [&] { return inflight_.load() == 0; });
}

}  // namespace orgd
