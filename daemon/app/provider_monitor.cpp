#include "daemon/app/provider_monitor.hpp"

#include "daemon/core/timestamps.hpp"

namespace orgd {

namespace {

v1::ProviderStatus describe(const Provider& provider) {
  v1::ProviderStatus status;
  status.set_name(provider.name());
  status.set_type(provider.type());
  for (const auto& capability : provider.capabilities().names()) status.add_capabilities(capability);
  return status;
}

}  // namespace

ProviderMonitor::ProviderMonitor(std::chrono::milliseconds interval, const Clock& clock,
                                 MetricsRegistry& metrics)
    : interval_(interval), clock_(clock), metrics_(metrics) {
  probes_failed_ = &metrics.counter("orgd_provider_probes_failed_total",
                                    "Provider health probes that failed or could not run");
}

ProviderMonitor::~ProviderMonitor() { stop(); }

void ProviderMonitor::set_providers(std::shared_ptr<const ProviderSet> providers) {
  {
    std::lock_guard lock(mutex_);
    providers_ = std::move(providers);
    changed_ = true;
  }
  wake_.notify_all();
}

void ProviderMonitor::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void ProviderMonitor::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ProviderMonitor::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    changed_ = false;
    lock.unlock();
    probe_all();
    lock.lock();
    wake_.wait_for(lock, interval_, [&] { return stopping_ || changed_; });
  }
}

void ProviderMonitor::probe_all() {
  std::shared_ptr<const ProviderSet> providers;
  {
    std::lock_guard lock(mutex_);
    providers = providers_;
  }
  if (!providers) return;
  std::map<std::string, v1::ProviderStatus> results;
  for (const auto& provider : providers->all()) {
    HealthProbe* probe = provider->health_probe();
    if (probe == nullptr) continue;
    v1::ProviderStatus status;
    status.set_probed(true);
    *status.mutable_checked_at() = to_timestamp(clock_.now());
    Result<ProbeResult> found = internal_error("probe threw");
    try {
      found = probe->probe();
    } catch (const std::exception& e) {
      found = internal_error(std::string("probe threw: ") + e.what());
    }
    auto& ok_gauge = metrics_.gauge("orgd_provider_probe_ok",
                                    "1 when the provider's last health probe passed, else 0",
                                    {{"provider", provider->name()}});
    if (!found) {
      probes_failed_->inc();
      ok_gauge.set(0);
      status.set_ok(false);
      status.set_detail(found.error().message);
      status.set_last_error(found.error().message);
      results[provider->name()] = std::move(status);
      continue;
    }
    const ProbeResult& r = found.value();
    if (!r.ok) probes_failed_->inc();
    ok_gauge.set(r.ok ? 1 : 0);
    status.set_ok(r.ok);
    status.set_detail(r.detail);
    if (r.rate_limit_remaining) status.set_rate_limit_remaining(*r.rate_limit_remaining);
    if (r.rate_limit_limit) status.set_rate_limit_limit(*r.rate_limit_limit);
    if (r.rate_limit_reset) *status.mutable_rate_limit_reset() = to_timestamp(*r.rate_limit_reset);
    status.set_circuit(r.circuit);
    status.set_last_error(r.last_error);
    for (const ProviderQuota& q : r.quotas) {
      auto* quota = status.add_quotas();
      quota->set_name(q.name);
      if (q.used) quota->set_used(*q.used);
      if (q.limit) quota->set_limit(*q.limit);
    }
    results[provider->name()] = std::move(status);
  }
  std::lock_guard lock(mutex_);
  // Results are matched by name: after a config change, list() shows only current providers,
  // and the thread probes the new set at once.
  probed_ = std::move(results);
}

v1::ProviderList ProviderMonitor::list() const {
  std::lock_guard lock(mutex_);
  v1::ProviderList list;
  if (!providers_) return list;
  for (const auto& provider : providers_->all()) {
    v1::ProviderStatus status = describe(*provider);
    if (const auto it = probed_.find(provider->name()); it != probed_.end()) {
      v1::ProviderStatus merged = it->second;
      merged.set_name(status.name());
      merged.set_type(status.type());
      *merged.mutable_capabilities() = status.capabilities();
      status = std::move(merged);
    }
    list.add_providers()->CopyFrom(status);
  }
  return list;
}

}  // namespace orgd
