#pragma once

#include <nats/nats.h>

#include <mutex>
#include <string>
#include <vector>

#include "daemon/bus/message.hpp"

namespace orgd::testing {

// Collects every message on a subject (wildcards allowed) through a raw nats.c subscription,
// copied into BusMessages on nats.c's thread.
class Collector {
 public:
  Collector(natsConnection* conn, const std::string& subject);
  ~Collector();
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  std::vector<BusMessage> messages();
  std::size_t size();

 private:
  static void on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* self);

  natsSubscription* sub_ = nullptr;
  std::mutex mutex_;  // guards messages_
  std::vector<BusMessage> messages_;
};

}  // namespace orgd::testing
