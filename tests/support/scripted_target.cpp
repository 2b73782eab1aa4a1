#include "tests/support/scripted_target.hpp"

namespace orgd::testing {

Outcome Outcome::running(std::string handle) {
  return Outcome{DeployStatus::running, std::move(handle), {}};
}
Outcome Outcome::succeeded(std::string handle) {
  return Outcome{DeployStatus::succeeded, std::move(handle), {}};
}
Outcome Outcome::failed(std::string error, std::string handle) {
  return Outcome{DeployStatus::failed, std::move(handle), std::move(error)};
}
Outcome Outcome::interrupted(std::string error, std::string handle) {
  return Outcome{DeployStatus::interrupted, std::move(handle), std::move(error)};
}
Outcome Outcome::phase_done(int phase, std::string handle) {
  Outcome outcome{DeployStatus::phase_done, std::move(handle), {}};
  outcome.progress_.phase = phase;
  return outcome;
}
Outcome Outcome::error(Error error) { return Outcome{std::move(error)}; }
Outcome Outcome::computed(std::function<Result<DeployProgress>(const DeployContext&)> answer) {
  Outcome outcome;
  outcome.answer_ = std::move(answer);
  return outcome;
}

Outcome Outcome::hang() && {
  hangs_ = true;
  return std::move(*this);
}
Outcome Outcome::times(int n) && {
  times_ = n;
  return std::move(*this);
}
Outcome Outcome::log(std::string line) && {
  log_.push_back(std::move(line));
  return std::move(*this);
}
Outcome Outcome::link(std::string url, std::string detail) && {
  progress_.url = std::move(url);
  progress_.detail = std::move(detail);
  return std::move(*this);
}
Outcome Outcome::poll_after(Duration after) && {
  progress_.next_poll_after = after;
  return std::move(*this);
}

Result<DeployProgress> Outcome::result(const DeployContext& context) const {
  if (answer_) return answer_(context);
  if (error_) return *error_;
  DeployProgress progress = progress_;
  if (progress.handle.empty()) progress.handle = context.deploy_id;
  return progress;
}

void ScriptedTarget::script(const std::string& repo, Call call, std::vector<Outcome> outcomes) {
  std::lock_guard lock(mutex_);
  auto& next = scripts_[{repo, call}].next;
  for (auto& outcome : outcomes) next.push_back(std::move(outcome));
}

void ScriptedTarget::fallback(const std::string& repo, Call call, Outcome outcome) {
  std::lock_guard lock(mutex_);
  scripts_[{repo, call}].fallback = std::move(outcome).times(1);
}

void ScriptedTarget::set_max_call_duration(std::optional<Duration> duration) {
  std::lock_guard lock(mutex_);
  max_call_duration_ = duration;
}

std::optional<Duration> ScriptedTarget::max_call_duration() const {
  std::lock_guard lock(mutex_);
  return max_call_duration_;
}

std::vector<ScriptedTarget::Record> ScriptedTarget::calls() const {
  std::lock_guard lock(mutex_);
  return calls_;
}

std::vector<ScriptedTarget::Record> ScriptedTarget::calls(const std::string& repo,
                                                          Call call) const {
  std::lock_guard lock(mutex_);
  std::vector<Record> out;
  for (const auto& record : calls_) {
    if (record.call == call && record.context.repo == repo) out.push_back(record);
  }
  return out;
}

int ScriptedTarget::count(const std::string& repo, Call call) const {
  return static_cast<int>(calls(repo, call).size());
}

int ScriptedTarget::hung(const std::string& repo) const {
  std::lock_guard lock(mutex_);
  int n = 0;
  for (const auto& [name, blocked] : hung_) {
    if (repo.empty() || name == repo) n += blocked;
  }
  return n;
}

void ScriptedTarget::release(const std::string& repo) {
  {
    std::lock_guard lock(mutex_);
    ++releases_[repo];
  }
  released_cv_.notify_all();
}

void ScriptedTarget::release_all() {
  {
    std::lock_guard lock(mutex_);
    released_all_ = true;
  }
  released_cv_.notify_all();
}

Outcome ScriptedTarget::take(const Key& key) {
  auto& script = scripts_[key];
  if (!script.next.empty()) {
    Outcome outcome = script.next.front();
    if (outcome.count() <= 1) {
      script.next.pop_front();
    } else {
      script.next.front() = std::move(script.next.front()).times(outcome.count() - 1);
    }
    return outcome;
  }
  if (script.fallback) return *script.fallback;
  if (key.second == Call::recover) {
    return Outcome::error(not_found("scripted target keeps no record of it"));
  }
  // A cancel stops the deploy; an advance goes on to a deploy that is then done.
  if (key.second == Call::cancel) return Outcome::failed("cancelled");
  return Outcome::succeeded();
}

Result<DeployProgress> ScriptedTarget::call(Call call, const DeployContext& context,
                                            const LogSink* log) {
  std::unique_lock lock(mutex_);
  calls_.push_back({call, context, context.handle});
  const Outcome outcome = take({context.repo, call});
  if (outcome.hangs() && !released_all_) {
    const std::uint64_t released = releases_[context.repo];
    ++hung_[context.repo];
    released_cv_.wait(lock, [&] { return released_all_ || releases_[context.repo] != released; });
    --hung_[context.repo];
  }
  lock.unlock();
  if (log != nullptr && *log) {
    for (const auto& line : outcome.log_lines()) (*log)(line);
  }
  return outcome.result(context);
}

Result<DeployProgress> ScriptedTarget::start(const DeployContext& context, const LogSink& log) {
  return call(Call::start, context, &log);
}

Result<DeployProgress> ScriptedTarget::poll(const DeployContext& context) {
  return call(Call::poll, context, nullptr);
}

Result<DeployProgress> ScriptedTarget::rollback(const DeployContext& context, const LogSink& log) {
  return call(Call::rollback, context, &log);
}

Result<DeployProgress> ScriptedTarget::recover(const DeployContext& context) {
  return call(Call::recover, context, nullptr);
}

Result<DeployProgress> ScriptedTarget::cancel(const DeployContext& context) {
  return call(Call::cancel, context, nullptr);
}

Result<DeployProgress> ScriptedTarget::advance(const DeployContext& context) {
  return call(Call::advance, context, nullptr);
}

namespace {

// The DeployTarget an Inventory owns, forwarding to the test's ScriptedTarget.
class ForwardingTarget final : public DeployTarget {
 public:
  explicit ForwardingTarget(std::shared_ptr<ScriptedTarget> target) : target_(std::move(target)) {}
  Result<DeployProgress> start(const DeployContext& c, const LogSink& log) override {
    return target_->start(c, log);
  }
  Result<DeployProgress> poll(const DeployContext& c) override { return target_->poll(c); }
  bool can_cancel() const override { return target_->can_cancel(); }
  Result<DeployProgress> cancel(const DeployContext& c) override { return target_->cancel(c); }
  Result<DeployProgress> advance(const DeployContext& c) override { return target_->advance(c); }
  Result<DeployProgress> rollback(const DeployContext& c, const LogSink& log) override {
    return target_->rollback(c, log);
  }
  bool can_rollback() const override { return target_->can_rollback(); }
  std::optional<Duration> max_call_duration() const override {
    return target_->max_call_duration();
  }
  Result<DeployProgress> recover(const DeployContext& c) override { return target_->recover(c); }

 private:
  std::shared_ptr<ScriptedTarget> target_;
};

class ScriptedProvider final : public Provider {
 public:
  ScriptedProvider(std::string name, std::string type, std::shared_ptr<ScriptedTarget> target)
      : Provider(std::move(name), std::move(type)), target_(std::move(target)) {}
  std::unique_ptr<DeployTarget> make_deploy_target(const DeployTargetConfig&,
                                                   const std::string&) override {
    return std::make_unique<ForwardingTarget>(target_);
  }
  Capabilities capabilities() const override { return {.deploy_target = true}; }

 private:
  std::shared_ptr<ScriptedTarget> target_;
};

}  // namespace

ProviderRegistry::Factory scripted_provider_factory(std::shared_ptr<ScriptedTarget> target) {
  return [target](const ProviderConfig& config, const ProviderServices&, const std::string&) {
    return std::make_unique<ScriptedProvider>(config.name, config.type, target);
  };
}

}  // namespace orgd::testing
