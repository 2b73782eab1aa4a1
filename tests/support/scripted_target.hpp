#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/core/duration.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/plugin/provider.hpp"
#include "daemon/plugin/registry.hpp"

namespace orgd::testing {

// What one provider call of a ScriptedTarget does.
class Outcome {
 public:
  // A progress report; an empty handle stands for the deploy id of the call's context.
  static Outcome running(std::string handle = {});
  static Outcome succeeded(std::string handle = {});
  static Outcome failed(std::string error, std::string handle = {});
  static Outcome interrupted(std::string error, std::string handle = {});
  // A gated phase of a gradual rollout is out (phase 1 = the first).
  static Outcome phase_done(int phase, std::string handle = {});
  // The call itself fails: unavailable(...) for a provider that cannot be reached, not_found(...)
  // for recover() of a deploy the provider never started.
  static Outcome error(Error error);
  // Whatever `answer` says at the time of the call (a deploy that succeeds once the test says so).
  static Outcome computed(std::function<Result<DeployProgress>(const DeployContext&)> answer);

  // The call blocks until the test releases it (ScriptedTarget::release), then does the rest.
  Outcome hang() &&;
  // Used for the next `n` calls before the script moves on ("running 3 times").
  Outcome times(int n) &&;
  // A line the call writes to its log sink first (start and rollback have one).
  Outcome log(std::string line) &&;
  // The progress carries a link and a detail line / asks to be polled again after `after`.
  Outcome link(std::string url, std::string detail) &&;
  Outcome poll_after(Duration after) &&;

  Result<DeployProgress> result(const DeployContext& context) const;
  bool hangs() const { return hangs_; }
  int count() const { return times_; }
  const std::vector<std::string>& log_lines() const { return log_; }

 private:
  Outcome(DeployStatus status, std::string handle, std::string error)
      : progress_{status, std::move(handle), std::move(error)} {}
  explicit Outcome(Error error) : error_(std::move(error)) {}
  Outcome() = default;

  DeployProgress progress_;
  std::optional<Error> error_;
  std::function<Result<DeployProgress>(const DeployContext&)> answer_;
  bool hangs_ = false;
  int times_ = 1;
  std::vector<std::string> log_;
};

// A deploy target whose every call the test scripts, per repo (the context's repo) and call:
// outcomes are used in order, and once a script has run out every call gets the call's fallback
// (by default an instant successful deploy: start and poll succeed, rollback succeeds, recover
// is not_found). Every call is recorded. Thread-safe: the orchestrator calls it from its provider
// threads while the test scripts and inspects it.
//
// A hanging call blocks until release() or release_all(); the destructor does not release it,
// so a test ends with release_all() before it stops what calls the target.
class ScriptedTarget final : public DeployTarget {
 public:
  enum class Call { start, poll, recover, rollback, cancel, advance };
  struct Record {
    Call call;
    DeployContext context;
    std::string handle;  // the context's handle (what poll, cancel and advance ask about)
  };

  // Appends to what `call` on `repo` does next.
  void script(const std::string& repo, Call call, std::vector<Outcome> outcomes);
  void on_start(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::start, std::move(outcomes));
  }
  void on_poll(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::poll, std::move(outcomes));
  }
  void on_recover(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::recover, std::move(outcomes));
  }
  void on_rollback(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::rollback, std::move(outcomes));
  }
  void on_cancel(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::cancel, std::move(outcomes));
  }
  void on_advance(const std::string& repo, std::vector<Outcome> outcomes) {
    script(repo, Call::advance, std::move(outcomes));
  }
  // What `call` on `repo` does once its script has run out (times() does not apply).
  void fallback(const std::string& repo, Call call, Outcome outcome);

  void set_can_rollback(bool can) { can_rollback_ = can; }
  void set_can_cancel(bool can) { can_cancel_ = can; }
  void set_max_call_duration(std::optional<Duration> duration);

  // The calls made so far, in order; of one repo and call.
  std::vector<Record> calls() const;
  std::vector<Record> calls(const std::string& repo, Call call) const;
  int count(const std::string& repo, Call call) const;
  // Calls blocked in a hang now: of `repo`, or of any repo when empty.
  int hung(const std::string& repo = {}) const;
  // Lets go of the calls of `repo` hanging now; later hangs block again.
  void release(const std::string& repo);
  // Lets go of every hanging call, and makes later hangs return at once.
  void release_all();

  Result<DeployProgress> start(const DeployContext& context, const LogSink& log) override;
  Result<DeployProgress> poll(const DeployContext& context) override;
  Result<DeployProgress> rollback(const DeployContext& context, const LogSink& log) override;
  bool can_rollback() const override { return can_rollback_.load(); }
  bool can_cancel() const override { return can_cancel_.load(); }
  Result<DeployProgress> cancel(const DeployContext& context) override;
  Result<DeployProgress> advance(const DeployContext& context) override;
  std::optional<Duration> max_call_duration() const override;
  Result<DeployProgress> recover(const DeployContext& context) override;

 private:
  using Key = std::pair<std::string, Call>;
  struct Script {
    std::deque<Outcome> next;
    std::optional<Outcome> fallback;
  };

  Result<DeployProgress> call(Call call, const DeployContext& context, const LogSink* log);
  Outcome take(const Key& key);  // with mutex_ held

  std::atomic<bool> can_rollback_{true};
  std::atomic<bool> can_cancel_{false};
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable released_cv_;
  std::map<Key, Script> scripts_;
  std::vector<Record> calls_;
  std::map<std::string, int> hung_;                // repo -> calls blocked now
  std::map<std::string, std::uint64_t> releases_;  // repo -> release() calls so far
  bool released_all_ = false;
  std::optional<Duration> max_call_duration_;
};

// A provider whose every target is `target`, so an Inventory built from config deploys through
// one ScriptedTarget: registry.add_factory("remote", scripted_provider_factory(target)) with
// `providers: {scripted: {type: remote}}` and repos deployed by `provider: scripted`. Target
// settings are ignored.
ProviderRegistry::Factory scripted_provider_factory(std::shared_ptr<ScriptedTarget> target);

}  // namespace orgd::testing
