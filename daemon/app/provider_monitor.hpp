#pragma once

// What operators see of the providers (P.api.providers, `orgctl providers`): each provider of
// the current config, its capabilities, and what its health probe found last. Probes run on a
// thread of their own every `interval` (and at once after a config change), so a request is
// answered from memory and never spends a cloud API's budget.

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/core/clock.hpp"
#include "daemon/core/metrics.hpp"
#include "daemon/plugin/registry.hpp"
#include "orgd/v1/providers.pb.h"

namespace orgd {

class ProviderMonitor {
 public:
  ProviderMonitor(std::chrono::milliseconds interval, const Clock& clock, MetricsRegistry& metrics);
  ~ProviderMonitor();
  ProviderMonitor(const ProviderMonitor&) = delete;
  ProviderMonitor& operator=(const ProviderMonitor&) = delete;

  // The providers of the config now in force; probed at once.
  void set_providers(std::shared_ptr<const ProviderSet> providers);
  void start();
  void stop();
  // Probes every provider now, on the caller's thread (the monitor's thread does this).
  void probe_all();

  v1::ProviderList list() const;

 private:
  void run();

  const std::chrono::milliseconds interval_;
  const Clock& clock_;
  MetricsRegistry& metrics_;
  Counter* probes_failed_ = nullptr;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  bool changed_ = false;
  std::shared_ptr<const ProviderSet> providers_;
  std::map<std::string, v1::ProviderStatus> probed_;  // by provider name, the last results
  std::thread thread_;
};

}  // namespace orgd
