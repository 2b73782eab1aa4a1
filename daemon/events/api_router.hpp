#pragma once

#include <google/protobuf/message.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/bus/message.hpp"
#include "daemon/bus/publisher.hpp"
#include "daemon/bus/service_discovery.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/events/rejections.hpp"
#include "daemon/core/metrics.hpp"

namespace orgd {

// Every orgd instance subscribes to P.api.* in this queue group, so each request is handled once.
inline constexpr const char* kApiQueueGroup = "orgd";

// The synchronous API on P.api.<op> (DESIGN.md §4-5): decodes a request in the encoding its
// Content-Type names, calls the handler, and replies in the same encoding. Malformed input
// (invalid_argument) goes through Rejections (error reply, dead letter, counter); every other
// error (not found, conflict, unavailable) is an error reply only. Keeps ADR-32 endpoint stats.
class ApiRouter {
 public:
  ApiRouter(std::string prefix, std::size_t max_payload, Publisher& publisher,
            Rejections& rejections, MetricsRegistry& metrics);

  // Registers P.api.<op>, handled by `handler`. A reply over the connection's max_payload is
  // never dropped: the caller gets a too_large (413) error saying how big it was and
  // `too_large_hint` (what to ask for instead: a page, a filter), counted in
  // orgd_api_replies_too_large_total and logged the first time per endpoint.
  template <class Request, class Reply>
  void add(const std::string& op, std::function<Result<Reply>(const Request&)> handler,
           std::string too_large_hint = {}) {
    add_endpoint(op, [handler = std::move(handler)](std::string_view data, Encoding encoding,
                                                   std::size_t max_payload)
                         -> Result<std::string> {
      Request request;
      if (auto decoded = decode(data, encoding, request, max_payload); !decoded.ok()) {
        return Error{decoded.error()};
      }
      auto reply = handler(request);
      if (!reply.ok()) return Error{reply.error()};
      return encode(reply.value(), encoding);
    }, std::move(too_large_hint));
  }

  std::size_t endpoint_count() const { return endpoints_.size(); }
  const std::string& endpoint_subject(std::size_t i) const { return endpoints_[i]->subject; }
  const std::string& endpoint_name(std::size_t i) const { return endpoints_[i]->name; }

  // Handles one request to endpoint `i` and publishes the reply. Thread-safe.
  void dispatch(std::size_t i, const BusMessage& request);

  // Each endpoint with its live stats, as service discovery reports them.
  std::vector<ServiceEndpoint> stats() const;

 private:
  using Invoke =
      std::function<Result<std::string>(std::string_view, Encoding, std::size_t max_payload)>;
  struct Endpoint {
    std::string name;
    std::string subject;
    Invoke invoke;
    std::string too_large_hint;
    Histogram* latency = nullptr;
    Counter* too_large = nullptr;
    std::atomic<bool> too_large_logged{false};
    mutable std::mutex mutex;  // guards stats
    ServiceEndpoint stats;
  };
  void add_endpoint(const std::string& op, Invoke invoke, std::string too_large_hint);
  // Publishes a reply; one over max_payload becomes the endpoint's too_large error reply.
  // False when the caller got no answer it asked for (counted as the endpoint's error).
  bool send_reply(Endpoint& e, BusMessage reply, Encoding encoding, Error& sent_instead);

  std::string prefix_;
  std::size_t max_payload_;
  Publisher& publisher_;
  Rejections& rejections_;
  MetricsRegistry& metrics_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
};

}  // namespace orgd
