#pragma once

#include <google/protobuf/message.h>

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

  // Registers P.api.<op>, handled by `handler`.
  template <class Request, class Reply>
  void add(const std::string& op, std::function<Result<Reply>(const Request&)> handler) {
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
    });
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
    Histogram* latency = nullptr;
    mutable std::mutex mutex;  // guards stats
    ServiceEndpoint stats;
  };
  void add_endpoint(const std::string& op, Invoke invoke);

  std::string prefix_;
  std::size_t max_payload_;
  Publisher& publisher_;
  Rejections& rejections_;
  MetricsRegistry& metrics_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
};

}  // namespace orgd
