// Deploy runs without NATS or the wall clock: memory KV buckets, a scripted deploy target, manual
// time and an executor the test drives (DeployRig). What each test asserts is what the record,
// the events and the metrics say at a given moment: record merging on a conflict, lost leases,
// retries and their backoff, poll errors, every branch of a resume, the health gate's soak, and
// a start that hangs past its deadline.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "daemon/core/config.hpp"
#include "daemon/core/environment.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/deploy/lease_keeper.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/plugin/registry.hpp"
#include "tests/support/deploy_rig.hpp"
#include "tests/support/memory_deploy_store.hpp"

namespace orgd::testing {
namespace {

using namespace std::chrono_literals;
using Call = ScriptedTarget::Call;
using v1::DeployRecord;
using v1::DeployStep;

DeployRigSettings with_repos(std::string repos, std::string deploy = "") {
  DeployRigSettings settings;
  settings.repos = std::move(repos);
  settings.deploy = std::move(deploy);
  return settings;
}

std::vector<int> attempts_of(const std::vector<ScriptedTarget::Record>& calls) {
  std::vector<int> out;
  for (const auto& call : calls) out.push_back(call.context.attempt);
  return out;
}

std::size_t count_of(const std::vector<std::string>& kinds, const std::string& kind) {
  return static_cast<std::size_t>(std::count(kinds.begin(), kinds.end(), kind));
}

// ---- Record merging on a conflict ---------------------------------------------------------------

TEST(DeployRecordMerge, ACancelAnotherReplicaWroteIsMergedIntoTheRunsNextWrite) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  rig.target->on_poll("api", {Outcome::running("h2"), Outcome::succeeded("h2")});
  const std::string id = rig.deploy({"api", "web"});
  rig.run_until_idle();
  ASSERT_EQ(rig.step(id, "api").handle(), "h1");

  // Another replica's deploy.cancel, written between two of the run's writes.
  auto theirs = rig.other->load(id);
  ASSERT_TRUE(theirs && theirs.value());
  DeployRecord cancelled = theirs.value()->record;
  deploy::request_cancel(cancelled, "from orgd-b", rig.clock.now());
  ASSERT_TRUE(rig.other->update(cancelled, theirs.value()->revision));

  // The next poll's new handle is written compare-and-set on the run's old revision: it loses,
  // merges the cancel in and is written again; the cancel then stops web from starting.
  rig.advance(250ms);
  const DeployRecord record = rig.record(id);
  EXPECT_EQ(rig.counter("orgd_deploy_commit_conflicts_total"), 1);
  EXPECT_EQ(record.state(), DeployRecord::cancelled) << record.DebugString();
  EXPECT_TRUE(record.cancel_requested());
  EXPECT_EQ(record.cancel_reason(), "from orgd-b");
  EXPECT_EQ(rig.step(id, "api").handle(), "h2") << "the run's own change survived the merge";
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::succeeded);
  EXPECT_EQ(rig.step(id, "web").state(), DeployStep::cancelled);
  EXPECT_EQ(rig.target->count("web", Call::start), 0);
  const auto kinds = rig.publisher.kinds();
  EXPECT_EQ(count_of(kinds, "cancelled"), 1u) << ::testing::PrintToString(kinds);
  EXPECT_EQ(count_of(kinds, "finished"), 1u);
}

TEST(DeployRecordMerge, AWriteThatLostACompareAndSetIsWrittenAgain) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();

  // Someone else rewrote the record (same owner, nothing to merge): only its revision moved.
  auto theirs = rig.other->load(id);
  ASSERT_TRUE(theirs && theirs.value());
  ASSERT_TRUE(rig.other->update(theirs.value()->record, theirs.value()->revision));

  rig.advance(250ms);  // the poll says succeeded: its write conflicts, then goes through
  EXPECT_EQ(rig.counter("orgd_deploy_commit_conflicts_total"), 1);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::succeeded);
  EXPECT_TRUE(rig.publisher.has("step_succeeded api"));
}

TEST(DeployRecordMerge, ARecordAnotherOrgdNowRunsStopsTheRunAtItsNextWrite) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  ASSERT_EQ(rig.running(), 1u);

  auto theirs = rig.other->load(id);
  ASSERT_TRUE(theirs && theirs.value());
  DeployRecord taken = theirs.value()->record;
  deploy::mark_running(taken, "orgd-b", rig.clock.now());
  ASSERT_TRUE(rig.other->update(taken, theirs.value()->revision));

  rig.advance(250ms);  // the poll's success cannot be written: the record is orgd-b's now
  EXPECT_EQ(rig.running(), 0u);
  const DeployRecord record = rig.record(id);
  EXPECT_EQ(record.owner(), "orgd-b");
  EXPECT_EQ(record.state(), DeployRecord::running) << "orgd-a wrote nothing more";
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running);
  EXPECT_FALSE(rig.publisher.has("step_succeeded api"));
}

TEST(DeployRecordMerge, AStepTheRunWeTookOverFromWroteLateIsAdoptedNotOverwritten) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  rig.target->on_poll("api", {Outcome::running("h2"), Outcome::succeeded("h2")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  ASSERT_EQ(rig.step(id, "api").handle(), "h1");

  // The step's own key written by someone else after the run read it (a last write of the
  // runner this one took over from, landing late): the interrupted attempt it counted is news
  // to the run.
  auto theirs = rig.other->load(id);
  ASSERT_TRUE(theirs && theirs.value());
  DeployStep late = theirs.value()->record.steps(0);
  late.set_interrupted_attempts(1);
  ASSERT_TRUE(rig.other->update_step(id, 0, late, theirs.value()->step_revisions[0]));

  // The poll's new handle conflicts on the step's key: the run takes the stored step, applies
  // its change to it and writes again.
  rig.advance(250ms);
  EXPECT_EQ(rig.counter("orgd_deploy_commit_conflicts_total"), 1);
  const DeployStep step = rig.step(id, "api");
  EXPECT_EQ(step.handle(), "h2");
  EXPECT_EQ(step.interrupted_attempts(), 1) << "what the other runner wrote is kept";
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

// What a deploy of `repos` instant steps writes to the deploys bucket, in bytes.
std::uint64_t bytes_written_by_a_deploy(int repos) {
  std::string block;
  std::vector<std::string> names;
  for (int i = 0; i < repos; ++i) {
    names.push_back("repo-" + std::to_string(i));
    block += DeployRig::repo(names.back());
  }
  DeployRig rig(with_repos(block, "  parallel: 64\n"));
  const auto before = rig.kv.written(deploy::kDeploysBucket).bytes;
  const std::string id = rig.deploy(names);
  for (int i = 0; i < 600 && rig.record(id).state() != DeployRecord::succeeded; ++i) {
    rig.advance(1s);
  }
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.target->calls().size(), static_cast<std::size_t>(repos));
  return rig.kv.written(deploy::kDeploysBucket).bytes - before;
}

TEST(DeployRecordWrites, BytesWrittenPerDeployGrowWithItsReposNotTheirSquare) {
  const auto small = bytes_written_by_a_deploy(100);
  const auto large = bytes_written_by_a_deploy(800);
  // A record rewritten whole at each step's change would write 64 times as much for 8 times the
  // repos; steps under their own keys write 8 times as much, and a little more (longer names).
  const double per_repo_small = static_cast<double>(small) / 100;
  const double per_repo_large = static_cast<double>(large) / 800;
  EXPECT_LT(per_repo_large, per_repo_small * 1.5)
      << small << " bytes for 100 repos, " << large << " for 800";
}

// ---- Lost leases --------------------------------------------------------------------------------

TEST(DeployLease, ARunWhoseLeaseAnotherOrgdTookAfterItExpiredStops) {
  DeployRig rig(with_repos(DeployRig::repo("api"), "  lease_ttl: 3s\n"));
  rig.target->on_start("api", {Outcome::running("h1")});
  rig.target->fallback("api", Call::poll, Outcome::running("h1"));
  const std::string id = rig.deploy({"api"});
  rig.advance(2s);  // renewed every second
  ASSERT_EQ(rig.running(), 1u);
  const std::string lease = deploy::DeployStore::deploy_lease(id);
  ASSERT_EQ(rig.other->lease_holder(lease).value(), std::optional<std::string>{"orgd-a"});

  // NATS is gone for longer than the lease: the renewals fail, the lease expires, and once NATS
  // is back another orgd takes it.
  rig.kv.set_unavailable(true);
  rig.advance(4s);
  EXPECT_GT(rig.counter("orgd_deploy_kv_errors_total"), 0);
  rig.kv.set_unavailable(false);
  ASSERT_TRUE(rig.other->acquire_lease(lease, "orgd-b"));

  rig.advance(1s);  // the next renewal finds the lease orgd-b's
  EXPECT_EQ(rig.running(), 0u) << "the run stopped";
  EXPECT_EQ(rig.other->lease_holder(lease).value(), std::optional<std::string>{"orgd-b"})
      << "and left orgd-b's lease alone";
  const int polls = rig.target->count("api", Call::poll);
  rig.advance(2s);
  EXPECT_EQ(rig.target->count("api", Call::poll), polls) << "its step polls no more";
  EXPECT_EQ(rig.record(id).state(), DeployRecord::running);
  EXPECT_FALSE(rig.publisher.has("finished"));
}

// The scheduler's pass (its thread makes one every lease_ttl/3) resumes a deploy only once its
// runner's lease is gone: while another orgd renews it, the deploy is that orgd's.
TEST(DeployScheduler, TheSweepResumesADeployOnceItsRunnersLeaseHasExpired) {
  DeployRig rig(with_repos(DeployRig::repo("api"), "  lease_ttl: 3s\n"));
  const std::string id = rig.left_by_a_crash("api");
  const std::string lease = deploy::DeployStore::deploy_lease(id);
  // The crashed orgd's lease, written just before it died.
  ASSERT_TRUE(rig.other->acquire_lease(lease, "crashed-orgd"));
  rig.scheduler_tick();
  rig.run_until_idle();
  EXPECT_EQ(rig.running(), 0u) << "resumed while its runner's lease was live";
  EXPECT_EQ(rig.record(id).owner(), "crashed-orgd");

  rig.advance(3s);  // nobody renews it: the lease expires
  rig.scheduler_tick();
  rig.run_until_idle();
  EXPECT_EQ(rig.counter("orgd_deploys_resumed_total"), 1);
  EXPECT_EQ(rig.record(id).owner(), "orgd-a");
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_TRUE(rig.publisher.has("resumed"));
  // Finished and reaped at the next pass; nothing is resumed twice.
  rig.scheduler_tick();
  rig.run_until_idle();
  EXPECT_EQ(rig.running(), 0u);
  EXPECT_EQ(rig.counter("orgd_deploys_resumed_total"), 1);
}

TEST(DeployLease, TheSchedulerLeaseMovesToAnotherOrgdOnceItsHolderStopsRenewingIt) {
  DeployRig rig(with_repos(DeployRig::repo("api"), "  lease_ttl: 3s\n"));
  deploy::OrchestratorOptions options;
  options.instance_id = "orgd-b";
  auto b = std::make_shared<deploy::OrchestratorContext>(
      options, rig.shared->current_inventory(), rig.publisher, rig.health, rig.metrics, rig.clock,
      deploy::DeployRuntime{deploy::DeployExecutor::create_driven(rig.metrics.gauge("b", "")),
                            rig.timers});
  b->store_owner = memory_deploy_store(rig.kv, 3s);
  b->store.store(b->store_owner.get());
  deploy::SchedulerLease a_lease(rig.shared);
  deploy::SchedulerLease b_lease(b);

  a_lease.keep(*rig.shared->kv());
  b_lease.keep(*b->kv());
  EXPECT_TRUE(a_lease.held());
  EXPECT_FALSE(b_lease.held());
  EXPECT_TRUE(b_lease.follower());

  rig.advance(2s);
  a_lease.keep(*rig.shared->kv());  // renewed
  b_lease.keep(*b->kv());
  EXPECT_TRUE(a_lease.held());
  EXPECT_FALSE(b_lease.held());

  rig.advance(3s);  // a stops renewing: the lease expires
  b_lease.keep(*b->kv());
  EXPECT_TRUE(b_lease.held());
  EXPECT_FALSE(b_lease.follower());
  a_lease.keep(*rig.shared->kv());  // a's renewal finds it taken
  EXPECT_FALSE(a_lease.held());
  EXPECT_TRUE(a_lease.follower());
  EXPECT_EQ(rig.other->lease_holder(deploy::kSchedulerLease).value(),
            std::optional<std::string>{"orgd-b"});
  b->stop_threads(std::chrono::steady_clock::now() + 5s);
}

// ---- Retries, backoff and the failure policy ----------------------------------------------------

TEST(DeployRetry, AFailingStepIsRetriedAfterADoublingBackoffThenFails) {
  DeployRig rig(with_repos(DeployRig::repo("api", ", retries: 2, retry_backoff: 10s")));
  rig.target->on_start(
      "api", {Outcome::failed("boom 1"), Outcome::failed("boom 2"), Outcome::failed("boom 3")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.target->count("api", Call::start), 1);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running) << "backing off";
  EXPECT_EQ(rig.step(id, "api").error(), "boom 1");

  rig.advance(9900ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 1) << "not before retry_backoff";
  rig.advance(100ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 2);

  rig.advance(19900ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 2) << "the second backoff is twice as long";
  rig.advance(100ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 3);

  const DeployRecord record = rig.record(id);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(rig.step(id, "api").attempts(), 3);
  EXPECT_EQ(rig.step(id, "api").error(), "boom 3");
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::start)), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(rig.counter("orgd_deploy_step_retries_total"), 2);
  EXPECT_EQ(rig.counter("orgd_deploys_finished_total", {{"state", "failed"}}), 1);
  EXPECT_EQ(rig.publisher.kinds(),
            (std::vector<std::string>{"accepted", "step_started api", "step_retrying api",
                                      "step_retrying api", "step_failed api", "finished"}));
}

TEST(DeployRetry, AFailedStepWithPolicyStopSkipsWhatComesAfterIt) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api") +
                           DeployRig::repo("db", "", "web")));
  rig.target->on_start("web", {Outcome::failed("web is broken")});
  const std::string id = rig.deploy({"api", "web", "db"}, "stop");
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::succeeded);
  EXPECT_EQ(rig.step(id, "web").state(), DeployStep::failed);
  EXPECT_EQ(rig.step(id, "db").state(), DeployStep::skipped);
  EXPECT_EQ(rig.target->count("api", Call::rollback), 0);
  EXPECT_EQ(rig.target->count("db", Call::start), 0);
}

TEST(DeployRetry, AFailedStepWithPolicyRollbackRollsBackTheStepsBeforeIt) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api")));
  rig.target->on_start("web", {Outcome::failed("web is broken")});
  const std::string id = rig.deploy({"api", "web"}, "rollback");
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::rolled_back) << rig.record(id).DebugString();
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::rolled_back);
  EXPECT_EQ(rig.target->count("api", Call::rollback), 1);
  EXPECT_TRUE(rig.publisher.has("rolled_back api"));
  EXPECT_EQ(rig.counter("orgd_deploys_finished_total", {{"state", "rolled_back"}}), 1);
}

// ---- Poll errors --------------------------------------------------------------------------------

TEST(DeployPoll, PollErrorsShortOfTheLimitAreRiddenOut) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  rig.target->on_poll(
      "api",
      {Outcome::error(unavailable("provider API unreachable")).times(4), Outcome::running("h1"),
       Outcome::error(unavailable("provider API unreachable")).times(4), Outcome::succeeded("h1")});
  const std::string id = rig.deploy({"api"});
  // Each error doubles the wait before the next poll (2, 4, 8, 16 poll intervals).
  rig.advance(2 * (250ms + 30 * 250ms + 250ms));
  EXPECT_EQ(rig.target->count("api", Call::poll), 10);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded)
      << "a good answer in between starts the count again";
  EXPECT_EQ(rig.step(id, "api").attempts(), 1);
}

TEST(DeployPoll, FiveConsecutivePollErrorsFailTheAttempt) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("h1")});
  rig.target->fallback("api", Call::poll, Outcome::error(unavailable("provider API unreachable")));
  const std::string id = rig.deploy({"api"});
  // Polls at 1, then 1 + 2, + 4, + 8 poll intervals: the wait doubles after each error.
  rig.advance(15 * 250ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 4);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running) << "four errors in a row";
  rig.advance(16 * 250ms - 1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 4) << "the fifth poll waits 16 intervals";
  rig.advance(1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 5);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "poll failed: provider API unreachable");
  EXPECT_EQ(rig.target->calls("api", Call::poll).back().handle, "h1");
}

// ---- Resume: what the provider says of the attempt in flight ------------------------------------

TEST(DeployRecover, ARunningAttemptIsPolledToItsEnd) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::running("h9")});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.step(id, "api").handle(), "h9");
  EXPECT_EQ(rig.record(id).owner(), "orgd-a");
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.target->count("api", Call::start), 0);
  EXPECT_EQ(rig.target->calls("api", Call::poll).front().handle, "h9");
  EXPECT_EQ(rig.counter("orgd_deploys_resumed_total"), 1);
  EXPECT_TRUE(rig.publisher.has("resumed"));
}

TEST(DeployRecover, ASucceededAttemptSucceedsTheStep) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::succeeded()});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.step(id, "api").attempts(), 1);
  EXPECT_EQ(rig.target->count("api", Call::start), 0);
}

TEST(DeployRecover, AFailedAttemptFailsTheStepWithoutStartingIt) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::failed("the release was rejected")});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "the release was rejected");
  EXPECT_EQ(rig.step(id, "api").interrupted_attempts(), 0);
  EXPECT_EQ(rig.target->count("api", Call::start), 0);
}

TEST(DeployRecover, AnInterruptedAttemptRunsAgainWithoutUsingARetry) {
  // retries: 0 — the attempt the crash ended must not be the step's only chance.
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::interrupted("interrupted: orgd stopped")});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.step(id, "api").attempts(), 2);
  EXPECT_EQ(rig.step(id, "api").interrupted_attempts(), 1);
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::recover)), std::vector<int>{1});
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::start)), std::vector<int>{2});
  EXPECT_EQ(rig.counter("orgd_deploy_steps_interrupted_total"), 1);
  EXPECT_EQ(rig.counter("orgd_deploy_step_retries_total"), 0);
  EXPECT_TRUE(rig.publisher.has("step_interrupted api"));
}

TEST(DeployRecover, AnAttemptTheProviderNeverSawIsStarted) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::error(not_found("no record of it"))});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::start)), std::vector<int>{1})
      << "the same attempt, started now";
  EXPECT_EQ(rig.step(id, "api").attempts(), 1);
}

TEST(DeployRecover, AProviderThatCannotAnswerYetIsAskedAgain) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_recover("api", {Outcome::error(unavailable("provider API unreachable")).times(2),
                                 Outcome::interrupted("interrupted: orgd stopped")});
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.target->count("api", Call::recover), 1);
  rig.advance(250ms);
  EXPECT_EQ(rig.target->count("api", Call::recover), 2) << "asked again a poll interval later";
  rig.advance(250ms);
  EXPECT_EQ(rig.target->count("api", Call::recover), 3);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::start)), std::vector<int>{2});
}

TEST(DeployRecover, AProviderThatNeverAnswersFailsTheStepAfterFiveTries) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->fallback("api", Call::recover, Outcome::error(unavailable("provider API down")));
  const std::string id = rig.left_by_a_crash("api");
  rig.resume(id);
  rig.advance(5 * 250ms);
  EXPECT_EQ(rig.target->count("api", Call::recover), 5);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "recover failed: provider API down");
}

TEST(DeployRecover, AStepWithAHandleIsPolledWithoutAskingTheProvider) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  const std::string id = rig.left_by_a_crash(
      "api", [](DeployRecord& record) { deploy::mark_handle(record, "api", "h7"); });
  rig.resume(id);
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.target->count("api", Call::recover), 0);
  EXPECT_EQ(rig.target->calls("api", Call::poll).front().handle, "h7");
}

// ---- The health gate ----------------------------------------------------------------------------

constexpr const char* kGate = ", health_gate: {enabled: true, timeout: 30s, soak: 5s}";

std::vector<std::string> waiting_for_events(const RecordingPublisher& publisher) {
  std::vector<std::string> out;
  for (const auto& e : publisher.events()) {
    if (e.kind() == "health_gate_waiting") out.push_back(e.step().waiting_for());
  }
  return out;
}

TEST(DeployGate, AHealthyRepoPassesOnceItHasHeldForTheSoak) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.step(id, "api").waiting_for(), "health: ok, holding for 5s");
  EXPECT_TRUE(is_set(rig.step(id, "api").deployed_at()));
  rig.advance(4750ms);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running) << "not before the soak";
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_TRUE(is_set(rig.step(id, "api").healthy_at()));
  EXPECT_TRUE(rig.step(id, "api").waiting_for().empty());
  EXPECT_TRUE(rig.publisher.has("health_gate_passed api"));
  EXPECT_EQ(waiting_for_events(rig.publisher),
            std::vector<std::string>{"health: ok, holding for 5s"});
}

TEST(DeployGate, AnUnhealthyReportStartsTheSoakAgain) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  const std::string id = rig.deploy({"api"});
  rig.advance(3s);
  rig.health.set(FakeHealth::unhealthy({"http"}, "http is down"));
  rig.advance(250ms);
  EXPECT_EQ(rig.step(id, "api").waiting_for(), "health: api/http");
  rig.health.set(FakeHealth::healthy());
  rig.advance(250ms);  // healthy again from here: 5s more
  rig.advance(4750ms);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running)
      << "the 3s before the report do not count";
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(waiting_for_events(rig.publisher),
            (std::vector<std::string>{"health: ok, holding for 5s", "health: api/http",
                                      "health: ok, holding for 5s"}));
}

TEST(DeployGate, ARepoNeverHealthyFailsAtTheTimeoutWithWhatWasMissing) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  rig.health.set(FakeHealth::unhealthy({"http"}, "http no report since deploy"));
  const std::string id = rig.deploy({"api"});
  rig.advance(29750ms);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running);
  EXPECT_EQ(rig.step(id, "api").waiting_for(), "health: api/http");
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(),
            "health gate: not healthy within 30s: http no report since deploy");
  EXPECT_TRUE(rig.publisher.has("step_failed api"));
}

TEST(DeployGate, CancelEndsTheWait) {
  DeployRig rig(with_repos(DeployRig::repo("api", ", health_gate: {enabled: true, timeout: 1h}")));
  rig.health.set(FakeHealth::unhealthy({"http"}, "http no report since deploy"));
  const std::string id = rig.deploy({"api"});
  rig.advance(1s);
  ASSERT_TRUE(rig.cancel(id, "operator"));
  // The run sees the request at its next look at the record (every lease_ttl/3, 5s here).
  rig.advance(5s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::cancelled);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::cancelled);
  EXPECT_EQ(rig.step(id, "api").error(), "cancelled while waiting for health: api/http");
  EXPECT_TRUE(rig.publisher.has("step_cancelled api"));
  const int checks = rig.health.checks();
  rig.advance(5s);
  EXPECT_EQ(rig.health.checks(), checks) << "the gate is no longer checked";
}

// ---- Provider calls past their deadline ---------------------------------------------------------

TEST(DeployHang, AStartThatHangsFailsItsAttemptAtItsDeadlineAndIsRetried) {
  DeployRig rig(
      with_repos(DeployRig::repo("api", ", step_timeout: 10s, retries: 1, retry_backoff: 5s")));
  rig.target->on_start("api", {Outcome::running().hang(), Outcome::running().hang()});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.target->hung("api"), 1);
  rig.advance(9900ms);
  EXPECT_EQ(rig.counter("orgd_provider_call_timeouts_total", {{"op", "start"}}), 0);
  rig.advance(100ms);
  EXPECT_EQ(rig.counter("orgd_provider_call_timeouts_total", {{"op", "start"}}), 1);
  EXPECT_EQ(rig.gauge("orgd_provider_calls_hung"), 1);
  EXPECT_TRUE(rig.publisher.has("step_retrying api"));
  rig.advance(5s);  // the backoff, then attempt 2, which hangs too
  EXPECT_EQ(rig.target->hung("api"), 2);
  rig.advance(10s);
  const DeployRecord record = rig.record(id);
  EXPECT_EQ(record.state(), DeployRecord::failed) << record.DebugString();
  EXPECT_EQ(rig.step(id, "api").attempts(), 2);
  EXPECT_EQ(rig.step(id, "api").error(), "start did not return within 10s");
  EXPECT_EQ(attempts_of(rig.target->calls("api", Call::start)), (std::vector<int>{1, 2}));
  // Both calls still hang: their threads are counted, not forgotten.
  EXPECT_EQ(rig.gauge("orgd_provider_calls_hung"), 2);
}

// ---- Requests ----------------------------------------------------------------------------------

TEST(DeployRequest, ARequestIdClaimedByAnOrgdThatDiedIsFreeAgainAfterTheGrace) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  // Claimed, then nothing: the orgd accepting it died before writing the record.
  ASSERT_TRUE(rig.other->claim_request("req-1", "20231114-221320-00000000"));
  v1::DeployRequest request;
  request.set_env("dev");
  request.add_repos("api");
  request.set_request_id("req-1");
  auto early = rig.deploy(request);
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, ErrorCode::unavailable);
  EXPECT_EQ(early.error().message, "request req-1 is being accepted right now; try again");
  rig.advance(29s);
  EXPECT_FALSE(rig.deploy(request)) << "by the orchestrator's clock, not the wall clock";
  rig.advance(2s);
  auto accepted = rig.deploy(request);
  ASSERT_TRUE(accepted) << accepted.error().message;
  EXPECT_FALSE(accepted.value().duplicate());
  rig.run_until_idle();
  EXPECT_EQ(rig.record(accepted.value().deploy_id()).state(), DeployRecord::succeeded);
}

// ---- The facade on memory buckets ---------------------------------------------------------------

TEST(OrchestratorOnMemoryBuckets, AttachesThroughABucketOpenerAndRunsADeploy) {
  ManualClock clock;
  MemoryKvStore kv(clock);
  auto target = std::make_shared<ScriptedTarget>();
  ProviderRegistry registry;
  registry.add_factory("remote", scripted_provider_factory(target));
  const Config config = load_config_string(
      "org: acme\n"
      "deploy:\n  health_gate: false\n"
      "providers:\n  scripted: {type: remote}\n"
      "repos:\n" +
          DeployRig::repo("api"),
      "test.yaml", Environment());
  auto inventory = deploy::Inventory::build(config, registry, ProviderEnvironment{});
  RecordingPublisher publisher;
  FakeHealth health;
  MetricsRegistry metrics;
  auto executor = deploy::DeployExecutor::create_driven(metrics.gauge("driven", ""));
  deploy::OrchestratorOptions options;
  options.instance_id = "orgd-a";
  options.prefix = "org.acme";
  deploy::Orchestrator orchestrator(options, inventory, publisher, health, metrics, clock,
                                    {executor, std::make_shared<ManualTimers>()});
  EXPECT_FALSE(orchestrator.attached());
  ASSERT_TRUE(orchestrator.attach(memory_bucket_opener(kv), &kv));
  EXPECT_TRUE(orchestrator.attached());
  ASSERT_TRUE(orchestrator.attach(memory_bucket_opener(kv), &kv)) << "every connect opens again";

  v1::DeployRequest request;
  request.set_env("dev");
  request.add_repos("api");
  auto accepted = orchestrator.deploy(request);
  ASSERT_TRUE(accepted) << accepted.error().message;
  v1::DeployGetRequest get;
  get.set_deploy_id(accepted.value().deploy_id());
  // The start is instant: the run ends once its answer is back (a provider thread's).
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    executor->run_ready();
    auto record = orchestrator.get(get);
    ASSERT_TRUE(record) << record.error().message;
    if (deploy::is_terminal(record.value().state())) break;
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << record.value().DebugString();
    std::this_thread::yield();
  }
  EXPECT_EQ(orchestrator.get(get).value().state(), DeployRecord::succeeded);
  EXPECT_TRUE(publisher.has("finished"));

  // The server comes back with an empty store: the next connect's attach makes the buckets again.
  kv.lose_data();
  EXPECT_FALSE(orchestrator.get(get));
  ASSERT_TRUE(orchestrator.attach(memory_bucket_opener(kv), &kv));
  auto lost = orchestrator.get(get);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, ErrorCode::not_found);
  EXPECT_TRUE(orchestrator.deploy(request)) << "deploys are accepted again";
  executor->start_thread();  // stops as orgd does
}

}  // namespace
}  // namespace orgd::testing
