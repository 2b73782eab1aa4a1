#pragma once

// The NATS requester providers are given (ProviderServices::nats): request-reply over the
// daemon's connection, `unavailable` while there is none or it is not connected. Providers are
// built before the connection exists (at config load), so it is attached once made and detached
// before it goes.

#include <shared_mutex>
#include <string>
#include <string_view>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/plugin/provider_services.hpp"

namespace orgd {

class BusRequester final : public NatsRequester {
 public:
  void attach(NatsConnection* connection);
  void detach() { attach(nullptr); }

  Result<std::string> request(const std::string& subject, std::string_view payload,
                              Duration timeout) override;

 private:
  // Held shared while a request uses the connection, so detach() waits for those in flight.
  std::shared_mutex mutex_;
  NatsConnection* connection_ = nullptr;
};

}  // namespace orgd
