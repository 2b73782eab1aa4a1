#include "daemon/deploy/orchestrator.hpp"

#include "daemon/deploy/deploy_service.hpp"
#include "daemon/deploy/last_deploys.hpp"
#include "daemon/deploy/scheduler.hpp"

namespace orgd::deploy {

using std::chrono::milliseconds;

// The parts are made in this order so that each finds the ones it uses: the last deploys ask
// the scheduler for re-reads (once it exists: events only arrive after the constructor), the
// deploy service starts runs through the scheduler.
Orchestrator::Orchestrator(OrchestratorOptions options, std::shared_ptr<const Inventory> inventory,
                           Publisher& publisher, const HealthGateSource& health,
                           MetricsRegistry& metrics, const Clock& clock, DeployRuntime runtime)
    : options_(options),
      shared_(std::make_shared<Shared>(std::move(options), std::move(inventory), publisher, health,
                                       metrics, clock, std::move(runtime))),
      last_deploys_(
          std::make_shared<LastDeploys>(shared_, metrics,
                                        [this](const std::string& deploy_id, bool finished) {
                                          return scheduler_->request_refresh(deploy_id, finished);
                                        })),
      scheduler_(std::make_unique<Scheduler>(shared_, *last_deploys_, metrics)),
      service_(std::make_unique<DeployService>(shared_, *scheduler_, attached_, metrics)) {
  shared_->previous_success = previous_success_from(last_deploys_);
}

Orchestrator::~Orchestrator() { stop(milliseconds{2000}); }

void Orchestrator::set_inventory(std::shared_ptr<const Inventory> inventory) {
  std::lock_guard lock(shared_->inventory_mutex);
  shared_->inventory = std::move(inventory);
}

Result<Ok> Orchestrator::attach(const BucketOpener& open, const void* connection) {
  std::lock_guard lock(attach_mutex_);
  if (shared_->stopping.load()) return unavailable("stopping");
  const auto settings = shared_->current_inventory()->settings();
  auto store =
      DeployStore::open(open,
                        deploy_bucket_specs(std::chrono::duration_cast<Duration>(settings.history),
                                            settings.lease_ttl, options_.replicas),
                        shared_->clock);
  if (!store) return store.error();
  // Every connect re-creates the buckets a server may have lost; the store's handles keep
  // reaching them while the JetStream context is the same. A new context (a new connection)
  // gets a new store; runs may still hold the old one, so it is kept.
  if (attached_.load() && connection == attached_connection_) return Ok{};
  if (shared_->store_owner) shared_->retired_stores.push_back(std::move(shared_->store_owner));
  shared_->store_owner = std::move(store.value());
  shared_->store.store(shared_->store_owner.get());
  attached_connection_ = connection;
  if (attached_.exchange(true)) return Ok{};
  scheduler_->start();
  return Ok{};
}

void Orchestrator::stop(std::chrono::milliseconds budget) {
  if (shared_->stopping.exchange(true)) return;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  scheduler_->stop(deadline);
  shared_->stop_threads(deadline);
}

Result<v1::DeployAccepted> Orchestrator::deploy(const v1::DeployRequest& request,
                                                const std::string& fallback_request_id,
                                                WhenLocked when_locked) {
  return service_->deploy(request, fallback_request_id, when_locked);
}

Result<v1::DeployRecord> Orchestrator::get(const v1::DeployGetRequest& request) {
  return service_->get(request);
}

Result<v1::DeployList> Orchestrator::list(const v1::DeployListRequest& request) {
  return service_->list(request);
}

Result<v1::DeployRecord> Orchestrator::cancel(const v1::DeployCancelRequest& request) {
  return service_->cancel(request);
}

Result<bool> Orchestrator::request_known(const std::string& request_id) {
  return service_->request_known(request_id);
}

void Orchestrator::fill_status(v1::RepoStatus& repo) const { last_deploys_->fill_status(repo); }

void Orchestrator::fill_status(v1::OrgStatus& org) const { last_deploys_->fill_status(org); }

void Orchestrator::observe(const v1::DeployEvent& event) { last_deploys_->observe(event); }

int Orchestrator::poll_now(const std::string& provider, const std::string& handle) {
  return shared_->poll_now(provider, handle);
}

std::size_t Orchestrator::summary_count() const { return last_deploys_->summary_count(); }

std::size_t Orchestrator::summary_bytes() const { return last_deploys_->summary_bytes(); }

std::size_t Orchestrator::running() const { return scheduler_->running(); }

bool Orchestrator::is_scheduler() const { return scheduler_->is_scheduler(); }

bool Orchestrator::is_follower() const { return scheduler_->is_follower(); }

}  // namespace orgd::deploy
