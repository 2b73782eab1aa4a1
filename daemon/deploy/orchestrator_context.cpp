#include "daemon/deploy/orchestrator_context.hpp"

#include <google/protobuf/struct.pb.h>

#include <algorithm>

#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_run.hpp"
#include "daemon/deploy/step_runner.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::deploy {

std::vector<std::vector<std::string>> waves_of(const Record& record) {
  std::vector<std::vector<std::string>> waves;
  for (const Step& step : record.steps()) {
    const auto wave = static_cast<std::size_t>(std::max(0, step.wave()));
    if (waves.size() <= wave) waves.resize(wave + 1);
    waves[wave].push_back(step.repo());
  }
  return waves;
}

void set_waves(google::protobuf::RepeatedPtrField<google::protobuf::ListValue>* out,
               const std::vector<std::vector<std::string>>& waves) {
  for (const auto& wave : waves) {
    auto* list = out->Add();
    for (const auto& repo : wave) list->add_values()->set_string_value(repo);
  }
}

OrchestratorContext::OrchestratorContext(OrchestratorOptions opts,
                                         std::shared_ptr<const Inventory> inv, Publisher& pub,
                                         const HealthGateSource& gate, MetricsRegistry& registry,
                                         const Clock& clk, DeployRuntime runtime)
    : options(std::move(opts)),
      publisher(pub),
      health(gate),
      metrics(registry),
      clock(clk),
      inventory(std::move(inv)),
      log(logging::get("deploy")) {
  deploys_accepted = &metrics.counter("orgd_deploys_accepted_total", "Deploys accepted");
  deploys_duplicate = &metrics.counter("orgd_deploys_duplicate_total",
                                       "Deploy requests answered with an existing deploy");
  deploys_conflict =
      &metrics.counter("orgd_deploys_conflicts_total", "Deploy requests refused: repo+env locked");
  deploys_resumed = &metrics.counter("orgd_deploys_resumed_total",
                                     "Deploys resumed after their runner's lease expired");
  for (const char* state : {"succeeded", "failed", "cancelled", "rolled_back"}) {
    deploys_finished[state] = &metrics.counter(
        "orgd_deploys_finished_total", "Deploys finished, by final state", {{"state", state}});
  }
  steps_started = &metrics.counter("orgd_deploy_steps_started_total", "Deploy steps started");
  step_retries = &metrics.counter("orgd_deploy_step_retries_total", "Deploy step retries");
  steps_interrupted = &metrics.counter(
      "orgd_deploy_steps_interrupted_total",
      "Deploy step attempts found interrupted by an orgd stop or crash, run again");
  commit_conflicts = &metrics.counter(
      "orgd_deploy_commit_conflicts_total",
      "Deploy record writes that lost a compare-and-set and were merged and retried");
  kv_errors = &metrics.counter("orgd_deploy_kv_errors_total",
                               "Deploy KV operations that failed (NATS unavailable)");
  active_gauge = &metrics.gauge("orgd_deploys_running", "Deploys this orgd is running");
  for (const char* op : {"start", "poll", "recover", "rollback"}) {
    provider_timeouts[op] =
        &metrics.counter("orgd_provider_call_timeouts_total",
                         "Provider calls that did not return within their deadline", {{"op", op}});
  }
  provider_hung = &metrics.gauge(
      "orgd_provider_calls_hung",
      "Provider calls past their deadline that have not returned yet (each holds a thread)");
  threads_abandoned =
      &metrics.counter("orgd_deploy_threads_abandoned_total",
                       "Deploy executor and provider threads left busy when orgd stopped");
  Gauge& executor_threads =
      metrics.gauge("orgd_deploy_executor_threads", "Threads running deploys and steps");
  executor = runtime.executor ? std::move(runtime.executor)
                              : DeployExecutor::create(options.executor_threads, executor_threads);
  timers = runtime.timers ? std::move(runtime.timers) : std::make_shared<AsioDeployTimers>();
  provider_calls = std::make_shared<ProviderCalls>(
      static_cast<std::size_t>(std::max(1, options.provider_threads)),
      metrics.gauge("orgd_provider_threads", "Threads making provider calls"));
}

void OrchestratorContext::publish_event(const Record& record, const std::string& kind,
                                        const Step* step, const std::string& msg_id,
                                        const std::string& line) {
  v1::DeployEvent event;
  event.set_deploy_id(record.deploy_id());
  event.set_kind(kind);
  if (step != nullptr) *event.mutable_step() = *step;
  event.set_state(record.state());
  *event.mutable_at() = to_timestamp(clock.now());
  event.set_env(record.env());
  event.set_ref(record.ref());
  if (!line.empty()) event.set_line(line);
  if (kind == "accepted") set_waves(event.mutable_waves(), waves_of(record));
  BusMessage message;
  message.subject = options.prefix + ".events.deploy." + record.deploy_id() + "." + kind;
  message.data = encode(event, Encoding::json);
  message.set_header("Nats-Msg-Id", msg_id);
  if (auto sent = publisher.publish(message); !sent) {
    log->warn("deploy {}: event {} not published: {}", record.deploy_id(), kind,
              sent.error().message);
  }
}

bool OrchestratorContext::take_slot(const std::shared_ptr<DeployRun>& run) {
  std::lock_guard lock(slots_mutex);
  const int max_active = std::max(1, current_inventory()->settings().max_active);
  if (active < max_active) {
    ++active;
    active_gauge->set(active);
    return true;
  }
  waiting_for_slot.push_back(run);
  return false;
}

void OrchestratorContext::release_slot() {
  std::shared_ptr<DeployRun> next;
  {
    std::lock_guard lock(slots_mutex);
    --active;
    while (!waiting_for_slot.empty()) {
      next = waiting_for_slot.front().lock();
      waiting_for_slot.pop_front();
      if (next && !next->finished()) {
        ++active;
        break;
      }
      next.reset();
    }
    active_gauge->set(active);
  }
  if (next) next->slot_granted();
}

void OrchestratorContext::watch_handle(const std::string& provider, const std::string& handle,
                                       const std::shared_ptr<StepRunner>& step) {
  std::lock_guard lock(watched_mutex);
  watched.emplace(std::make_pair(provider, handle), step);
}

void OrchestratorContext::unwatch_handle(const std::string& provider, const std::string& handle,
                                         const StepRunner* step) {
  std::lock_guard lock(watched_mutex);
  auto [begin, end] = watched.equal_range({provider, handle});
  for (auto it = begin; it != end;) {
    auto held = it->second.lock();
    it = held == nullptr || held.get() == step ? watched.erase(it) : std::next(it);
  }
}

int OrchestratorContext::poll_now(const std::string& provider, const std::string& handle) {
  std::vector<std::shared_ptr<StepRunner>> steps;
  {
    std::lock_guard lock(watched_mutex);
    auto [begin, end] = watched.equal_range({provider, handle});
    for (auto it = begin; it != end; ++it) {
      if (auto step = it->second.lock()) steps.push_back(std::move(step));
    }
  }
  for (const auto& step : steps) step->poll_soon();
  return static_cast<int>(steps.size());
}

}  // namespace orgd::deploy
