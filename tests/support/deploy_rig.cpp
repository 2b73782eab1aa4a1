#include "tests/support/deploy_rig.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/deploy/deploy_service.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/last_deploys.hpp"
#include "daemon/deploy/scheduler.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/support/memory_deploy_store.hpp"

namespace orgd::testing {

using namespace std::chrono_literals;

Result<Ok> RecordingPublisher::publish(const BusMessage& message) {
  v1::DeployEvent event;
  if (decode(message.data, Encoding::json, event, 1 << 20)) {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  return Ok{};
}

std::vector<v1::DeployEvent> RecordingPublisher::events() const {
  std::lock_guard lock(mutex_);
  return events_;
}

std::vector<std::string> RecordingPublisher::kinds() const {
  std::vector<std::string> out;
  for (const auto& e : events()) {
    if (e.kind() == "log") continue;
    out.push_back(e.kind() + (e.step().repo().empty() ? "" : " " + e.step().repo()));
  }
  return out;
}

bool RecordingPublisher::has(const std::string& kind_and_repo) const {
  const auto seen = kinds();
  return std::find(seen.begin(), seen.end(), kind_and_repo) != seen.end();
}

deploy::GateCheck FakeHealth::check(const std::string&, Clock::time_point) const {
  std::lock_guard lock(mutex_);
  ++checks_;
  return check_;
}

void FakeHealth::set(deploy::GateCheck check) {
  std::lock_guard lock(mutex_);
  check_ = std::move(check);
}

int FakeHealth::checks() const {
  std::lock_guard lock(mutex_);
  return checks_;
}

deploy::GateCheck FakeHealth::unhealthy(std::vector<std::string> services, std::string detail) {
  deploy::GateCheck check;
  check.detail = std::move(detail);
  check.unhealthy = std::move(services);
  return check;
}

DeployRig::DeployRig(DeployRigSettings settings) : settings_(std::move(settings)) {
  ProviderRegistry registry;
  registry.add_factory("remote", scripted_provider_factory(target));
  const Config config = load_config_string(
      "org: acme\n"
      "deploy:\n  health_gate: false\n" +
          settings_.deploy +
          "providers:\n  scripted: {type: remote}\n"
          "repos:\n" +
          settings_.repos,
      "test.yaml", Environment());
  auto inventory = deploy::Inventory::build(config, registry, ProviderEnvironment{});
  const DeployConfig& deploy_settings = inventory->settings();

  deploy::OrchestratorOptions options;
  options.instance_id = settings_.instance_id;
  options.prefix = "org.acme";
  options.poll_interval = settings_.poll_interval;
  options.provider_threads = settings_.provider_threads;
  executor_ = deploy::DeployExecutor::create_driven(
      metrics.gauge("orgd_deploy_executor_threads", "Threads running deploys and steps"));
  shared = std::make_shared<deploy::OrchestratorContext>(options, inventory, publisher, health,
                                                         metrics, clock,
                                                         deploy::DeployRuntime{executor_, timers});
  shared->store_owner = memory_deploy_store(kv, deploy_settings.lease_ttl, deploy_settings.history);
  shared->store.store(shared->store_owner.get());
  other = memory_deploy_store(kv, deploy_settings.lease_ttl, deploy_settings.history);
  // As Orchestrator makes them.
  last_deploys_ = std::make_shared<deploy::LastDeploys>(
      shared, metrics, [this](const std::string& deploy_id, bool finished) {
        return scheduler_->request_refresh(deploy_id, finished);
      });
  shared->previous_success = deploy::previous_success_from(last_deploys_);
  scheduler_ = std::make_unique<deploy::Scheduler>(shared, *last_deploys_, metrics);
  service_ = std::make_unique<deploy::DeployService>(shared, *scheduler_, attached_, metrics);
}

// Stops as Orchestrator::stop does, with the executor handed to a thread of its own: the runs
// still going stop there and hand their deploys over.
DeployRig::~DeployRig() {
  target->release_all();
  shared->provider_calls->wait_in_flight(0, std::chrono::steady_clock::now() + 10s);
  run_until_idle();
  shared->stopping.store(true);
  executor_->start_thread();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  scheduler_->stop(deadline);
  shared->stop_threads(deadline);
  timers->clear();
}

std::string DeployRig::repo(const std::string& name, const std::string& target_extra,
                            const std::string& depends_on) {
  return "  " + name + ":\n" +
         (depends_on.empty() ? "" : "    depends_on: [" + depends_on + "]\n") +
         "    deploy:\n      dev: {provider: scripted" + target_extra + "}\n";
}

std::string DeployRig::deploy(const std::vector<std::string>& repos,
                              const std::string& on_failure) {
  v1::DeployRequest request;
  request.set_env("dev");
  for (const auto& repo : repos) request.add_repos(repo);
  if (!on_failure.empty()) request.set_on_failure(on_failure);
  auto accepted = service_->deploy(request, {}, deploy::WhenLocked::refuse);
  EXPECT_TRUE(accepted) << accepted.error().message;
  return accepted ? accepted.value().deploy_id() : std::string{};
}

Result<v1::DeployAccepted> DeployRig::deploy(const v1::DeployRequest& request) {
  return service_->deploy(request, {}, deploy::WhenLocked::refuse);
}

Result<v1::DeployRecord> DeployRig::cancel(const std::string& id, const std::string& reason) {
  v1::DeployCancelRequest request;
  request.set_deploy_id(id);
  request.set_reason(reason);
  return service_->cancel(request);
}

v1::DeployRecord DeployRig::record(const std::string& id) {
  auto loaded = other->load(id);
  EXPECT_TRUE(loaded && loaded.value()) << "no record of deploy " << id;
  if (!loaded || !loaded.value()) return {};
  return loaded.value()->record;
}

v1::DeployStep DeployRig::step(const std::string& id, const std::string& repo) {
  const v1::DeployRecord loaded = record(id);
  const v1::DeployStep* found = deploy::find_step(loaded, repo);
  EXPECT_NE(found, nullptr) << "deploy " << id << " has no step " << repo;
  return found == nullptr ? v1::DeployStep{} : *found;
}

std::string DeployRig::left_by_a_crash(const std::string& repo,
                                       const std::function<void(v1::DeployRecord&)>& also) {
  const auto now = clock.now();
  const std::string id = deploy::new_deploy_id(now);
  v1::DeployRequest request;
  request.set_env("dev");
  request.add_repos(repo);
  auto record = deploy::new_record(id, {{repo}}, request, deploy::FailurePolicy::stop, now);
  deploy::mark_running(record, "crashed-orgd", now);
  deploy::mark_started(record, repo, "scripted", now);
  if (also) also(record);
  EXPECT_TRUE(other->acquire_locks({repo}, "dev", id));
  EXPECT_TRUE(other->mark_active(id));
  EXPECT_TRUE(other->create(record));
  return id;
}

void DeployRig::resume(const std::string& id) {
  auto lease =
      shared->kv()->acquire_lease(deploy::DeployStore::deploy_lease(id), settings_.instance_id);
  ASSERT_TRUE(lease) << lease.error().message;
  scheduler_->start_run(id, lease.value(), /*resumed=*/true);
}

void DeployRig::scheduler_tick() { scheduler_->tick(); }

void DeployRig::run_until_idle() {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    if (executor_->run_ready() + timers->fire_due() > 0) continue;
    const auto hung = static_cast<std::size_t>(target->hung());
    // A call's answer is posted to its strand before the call counts as ended.
    if (shared->provider_calls->in_flight() <= hung) {
      if (executor_->run_ready() == 0) return;
      continue;
    }
    if (std::chrono::steady_clock::now() > give_up) {
      ADD_FAILURE() << "provider calls did not come back";
      return;
    }
    // Until a call ends, or one more hangs in the target (which does not tell the calls).
    shared->provider_calls->wait_in_flight(hung, std::chrono::steady_clock::now() + 2ms);
  }
}

void DeployRig::advance(std::chrono::steady_clock::duration d) {
  const auto until = timers->now() + d;
  run_until_idle();
  for (;;) {
    const auto next = timers->next_due();
    if (!next || *next > until) break;
    move_time_to(*next);
    run_until_idle();
  }
  move_time_to(until);
  run_until_idle();
}

void DeployRig::move_time_to(deploy::DeployTimers::time_point t) {
  const auto now = timers->now();
  if (t > now) clock.advance(t - now);
  timers->set_now(t);
}

double DeployRig::counter(const std::string& name, const Labels& labels) {
  return metrics.counter(name, "", labels).value();
}

double DeployRig::gauge(const std::string& name) { return metrics.gauge(name, "").value(); }

std::size_t DeployRig::running() const { return scheduler_->running(); }

}  // namespace orgd::testing
