#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/events/api_router.hpp"

namespace orgd {

struct ApiDispatcherSettings {
  // Bound of API requests waiting for or in a handler; beyond it requests get 503 at once.
  std::size_t max_inflight = 4096;
  // By endpoint index: the endpoints whose handlers do KV round trips.
  std::vector<bool> kv_endpoints;
};

// Takes API requests from their subscriptions to the router's handlers, bounded. Endpoints whose
// handlers do KV round trips (deploy*) run on a small pool of their own, not on the io threads
// that serve probes, /status and P.api.status; the others run on the io_context. A request
// beyond a bound, or after stop_taking(), is answered 503 at once.
class ApiDispatcher {
 public:
  ApiDispatcher(ApiRouter& router, Publisher& replies, boost::asio::io_context& io,
                ApiDispatcherSettings settings, MetricsRegistry& metrics);
  // Joins the KV handlers.
  ~ApiDispatcher();
  ApiDispatcher(const ApiDispatcher&) = delete;
  ApiDispatcher& operator=(const ApiDispatcher&) = delete;

  // On the endpoint's subscription thread: only checks the bounds and posts.
  void on_request(std::size_t endpoint, BusMessage message);

  // Requests from now on are answered "orgd is shutting down".
  void stop_taking();
  // Waits until no handler runs or waits, or `deadline`.
  void wait_idle(std::chrono::steady_clock::time_point deadline);

 private:
  ApiRouter& router_;
  Publisher& replies_;
  boost::asio::io_context& io_;
  ApiDispatcherSettings settings_;

  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> inflight_{0};
  std::mutex inflight_mutex_;
  std::condition_variable inflight_cv_;
  std::atomic<std::size_t> kv_waiting_{0};  // bounds the KV handlers' queue
  Counter* kv_busy_ = nullptr;
  Gauge* inflight_gauge_ = nullptr;
  // Last member: its destructor joins the handlers before anything they use goes.
  std::unique_ptr<boost::asio::thread_pool> kv_pool_;
};

}  // namespace orgd
