// The deploy state machine: what runs next, failure policies, cancel, and guarded transitions.
#include "daemon/deploy/deploy_state.hpp"

#include <gtest/gtest.h>

#include <regex>

#include "daemon/deploy/deploy_store.hpp"

namespace orgd::deploy {
namespace {

using namespace std::chrono_literals;

const Clock::time_point t0 = Clock::time_point{} + 1000h;

v1::DeployRequest request(const std::string& env = "dev") {
  v1::DeployRequest r;
  r.set_env(env);
  r.set_ref("abc");
  r.set_request_id("req-1");
  return r;
}

// api | web, worker | edge
Record three_waves(FailurePolicy policy = FailurePolicy::stop) {
  return new_record("d1", {{"api"}, {"web", "worker"}, {"edge"}}, request(), policy, t0);
}

// Drives a step through a successful deploy.
void succeed(Record& r, const std::string& repo, Clock::time_point at) {
  ASSERT_TRUE(mark_started(r, repo, "local", at));
  ASSERT_TRUE(mark_deployed(r, repo, at + 1s));
  ASSERT_TRUE(mark_succeeded(r, repo, at + 2s));
}

TEST(DeployState, NewRecordHasOnePendingStepPerRepoWithItsWave) {
  const Record r = three_waves();
  EXPECT_EQ(r.deploy_id(), "d1");
  EXPECT_EQ(r.env(), "dev");
  EXPECT_EQ(r.ref(), "abc");
  EXPECT_EQ(r.request_id(), "req-1");
  EXPECT_EQ(r.state(), Record::pending);
  EXPECT_EQ(r.on_failure(), "stop");
  ASSERT_EQ(r.steps_size(), 4);
  EXPECT_EQ(r.steps(0).repo(), "api");
  EXPECT_EQ(r.steps(0).wave(), 0);
  EXPECT_EQ(r.steps(2).repo(), "worker");
  EXPECT_EQ(r.steps(2).wave(), 1);
  EXPECT_EQ(r.steps(3).wave(), 2);
  for (const auto& s : r.steps()) EXPECT_EQ(s.state(), Step::pending);
}

TEST(DeployState, WavesAreBarriersAndParallelIsALimit) {
  Record r = three_waves();
  EXPECT_EQ(next_actions(r, 4).start, std::vector<std::string>{"api"});
  ASSERT_TRUE(mark_started(r, "api", "local", t0));
  EXPECT_TRUE(next_actions(r, 4).start.empty()) << "nothing else while api runs";
  ASSERT_TRUE(mark_deployed(r, "api", t0));
  ASSERT_TRUE(mark_succeeded(r, "api", t0));
  EXPECT_EQ(next_actions(r, 1).start, std::vector<std::string>{"web"});
  EXPECT_EQ(next_actions(r, 4).start, (std::vector<std::string>{"web", "worker"}));
  ASSERT_TRUE(mark_started(r, "web", "local", t0));
  EXPECT_TRUE(next_actions(r, 1).start.empty()) << "one running, limit 1";
  EXPECT_EQ(next_actions(r, 2).start, std::vector<std::string>{"worker"});
  succeed(r, "worker", t0);
  EXPECT_TRUE(next_actions(r, 4).start.empty()) << "edge waits for web";
  ASSERT_TRUE(mark_succeeded(r, "web", t0));
  EXPECT_EQ(next_actions(r, 4).start, std::vector<std::string>{"edge"});
  succeed(r, "edge", t0);
  const auto done = next_actions(r, 4);
  ASSERT_TRUE(done.finish);
  EXPECT_EQ(*done.finish, Record::succeeded);
}

TEST(DeployState, StopPolicySkipsWhatIsLeftAndLetsRunningStepsFinish) {
  Record r = three_waves();
  succeed(r, "api", t0);
  ASSERT_TRUE(mark_started(r, "web", "local", t0));
  ASSERT_TRUE(mark_started(r, "worker", "local", t0));
  ASSERT_TRUE(mark_failed(r, "web", "exit 1", t0 + 5s));
  auto next = next_actions(r, 4);
  EXPECT_TRUE(next.start.empty());
  EXPECT_EQ(next.skip, std::vector<std::string>{"edge"});
  EXPECT_EQ(next.skip_as, Step::skipped);
  EXPECT_FALSE(next.finish) << "worker is still running";
  ASSERT_TRUE(mark_skipped(r, "edge", next.skip_as, t0));
  ASSERT_TRUE(mark_succeeded(r, "worker", t0 + 6s));
  next = next_actions(r, 4);
  ASSERT_TRUE(next.finish);
  EXPECT_EQ(*next.finish, Record::failed);
  EXPECT_FALSE(next.rollback);
  EXPECT_EQ(r.error(), "web: exit 1");
}

TEST(DeployState, RollbackPolicyUndoesDeployedStepsLatestFirst) {
  Record r = three_waves(FailurePolicy::rollback);
  succeed(r, "api", t0);
  succeed(r, "worker", t0 + 10s);
  ASSERT_TRUE(mark_started(r, "web", "local", t0 + 10s));
  // web deployed, then failed its health gate: it is rolled back too.
  ASSERT_TRUE(mark_deployed(r, "web", t0 + 20s));
  ASSERT_TRUE(mark_failed(r, "web", "health gate", t0 + 30s));
  auto next = next_actions(r, 4);
  ASSERT_TRUE(next.rollback);
  EXPECT_EQ(*next.rollback, "web");
  ASSERT_TRUE(mark_rolled_back(r, "web", t0 + 31s));
  ASSERT_TRUE(mark_skipped(r, "edge", Step::skipped, t0));
  next = next_actions(r, 4);
  ASSERT_TRUE(next.rollback);
  EXPECT_EQ(*next.rollback, "worker");
  ASSERT_TRUE(mark_rolled_back(r, "worker", t0 + 32s));
  EXPECT_EQ(*next_actions(r, 4).rollback, "api");
  ASSERT_TRUE(mark_rolled_back(r, "api", t0 + 33s));
  next = next_actions(r, 4);
  ASSERT_TRUE(next.finish);
  EXPECT_EQ(*next.finish, Record::rolled_back);
}

TEST(DeployState, AFailedRollbackIsNotRetriedAndTheDeployEndsFailed) {
  Record r = three_waves(FailurePolicy::rollback);
  succeed(r, "api", t0);
  ASSERT_TRUE(mark_started(r, "web", "local", t0));
  ASSERT_TRUE(mark_failed(r, "web", "exit 2", t0));  // never deployed: nothing to undo
  ASSERT_TRUE(mark_skipped(r, "worker", Step::skipped, t0));
  ASSERT_TRUE(mark_skipped(r, "edge", Step::skipped, t0));
  auto next = next_actions(r, 4);
  ASSERT_TRUE(next.rollback);
  EXPECT_EQ(*next.rollback, "api");
  ASSERT_TRUE(mark_rollback_failed(r, "api", "no rollback_command"));
  EXPECT_FALSE(mark_rollback_failed(r, "api", "again")) << "recorded once";
  next = next_actions(r, 4);
  EXPECT_FALSE(next.rollback);
  ASSERT_TRUE(next.finish);
  EXPECT_EQ(*next.finish, Record::failed);
}

TEST(DeployState, CancelSkipsPendingStepsAsCancelledAfterRunningOnesFinish) {
  Record r = three_waves();
  ASSERT_TRUE(mark_started(r, "api", "local", t0));
  ASSERT_TRUE(request_cancel(r, "operator", t0));
  auto next = next_actions(r, 4);
  EXPECT_TRUE(next.start.empty());
  EXPECT_EQ(next.skip_as, Step::cancelled);
  EXPECT_EQ(next.skip.size(), 3u);
  EXPECT_FALSE(next.finish);
  ASSERT_TRUE(mark_succeeded(r, "api", t0));
  for (const auto& repo : next.skip) ASSERT_TRUE(mark_skipped(r, repo, Step::cancelled, t0));
  next = next_actions(r, 4);
  ASSERT_TRUE(next.finish);
  EXPECT_EQ(*next.finish, Record::cancelled);
  mark_finished(r, Record::cancelled, t0 + 1s);
  EXPECT_EQ(r.error(), "cancelled: operator");
  EXPECT_FALSE(request_cancel(r, "late", t0)) << "a finished deploy cannot be cancelled";
  EXPECT_TRUE(next_actions(r, 4).start.empty());
  EXPECT_FALSE(next_actions(r, 4).finish) << "a finished record needs nothing more";
}

TEST(DeployState, TransitionsOnlyMoveForward) {
  Record r = three_waves();
  EXPECT_FALSE(mark_succeeded(r, "api", t0)) << "not started";
  EXPECT_FALSE(mark_deployed(r, "api", t0));
  EXPECT_FALSE(mark_healthy(r, "api", t0)) << "not deployed";
  ASSERT_TRUE(mark_started(r, "api", "local", t0));
  EXPECT_FALSE(mark_started(r, "api", "local", t0)) << "already running";
  EXPECT_EQ(find_step(r, "api")->attempts(), 1);
  EXPECT_FALSE(mark_healthy(r, "api", t0)) << "not deployed yet";
  ASSERT_TRUE(mark_deployed(r, "api", t0));
  EXPECT_FALSE(mark_deployed(r, "api", t0 + 1s)) << "deployed once";
  ASSERT_TRUE(mark_succeeded(r, "api", t0));
  EXPECT_FALSE(mark_succeeded(r, "api", t0)) << "a replayed outcome changes nothing";
  EXPECT_FALSE(mark_failed(r, "api", "late", t0));
  EXPECT_FALSE(mark_started(r, "nope", "local", t0));
  EXPECT_EQ(find_step(r, "api")->state(), Step::succeeded);
}

TEST(DeployState, RetryingCountsTheAttemptAndForgetsTheOldHandle) {
  Record r = three_waves();
  ASSERT_TRUE(mark_started(r, "api", "exec", t0));
  ASSERT_TRUE(mark_handle(r, "api", "h-1"));
  ASSERT_TRUE(mark_deployed(r, "api", t0));
  ASSERT_TRUE(mark_retrying(r, "api", "exit 1"));
  const Step& api = *find_step(r, "api");
  EXPECT_EQ(api.state(), Step::running);
  EXPECT_EQ(api.attempts(), 2);
  EXPECT_EQ(api.error(), "exit 1");
  EXPECT_TRUE(api.handle().empty());
  EXPECT_FALSE(api.has_deployed_at());
  EXPECT_EQ(api.provider(), "exec");
}

TEST(DeployState, AnInterruptedAttemptIsANewAttemptButNotARetry) {
  Record r = three_waves();
  ASSERT_TRUE(mark_started(r, "api", "exec", t0));
  EXPECT_EQ(retries_used(*find_step(r, "api")), 0);
  ASSERT_TRUE(mark_interrupted(r, "api", "interrupted: orgd stopped"));
  const Step& api = *find_step(r, "api");
  EXPECT_EQ(api.state(), Step::running);
  EXPECT_EQ(api.attempts(), 2);
  EXPECT_EQ(api.interrupted_attempts(), 1);
  EXPECT_EQ(retries_used(api), 0);
  ASSERT_TRUE(mark_retrying(r, "api", "exit 1"));
  EXPECT_EQ(retries_used(*find_step(r, "api")), 1);
  ASSERT_TRUE(mark_failed(r, "api", "exit 1", t0));
  EXPECT_FALSE(mark_interrupted(r, "api", "late")) << "only a running step";
}

TEST(DeployState, WaitingForIsSetWhileRunningAndClearedWhenTheStepEnds) {
  Record r = three_waves();
  ASSERT_TRUE(mark_started(r, "api", "local", t0));
  ASSERT_TRUE(mark_waiting(r, "api", "health: api/http"));
  EXPECT_FALSE(mark_waiting(r, "api", "health: api/http")) << "unchanged: nothing to write";
  EXPECT_EQ(find_step(r, "api")->waiting_for(), "health: api/http");
  ASSERT_TRUE(mark_succeeded(r, "api", t0 + 1s));
  EXPECT_TRUE(find_step(r, "api")->waiting_for().empty());
  EXPECT_FALSE(mark_waiting(r, "api", "health: api/http"));
}

TEST(DeployState, ACancelledRunningStepEndsTheDeployCancelled) {
  Record r = three_waves();
  ASSERT_TRUE(mark_started(r, "api", "local", t0));
  ASSERT_TRUE(mark_waiting(r, "api", "health: api/http"));
  ASSERT_TRUE(request_cancel(r, "operator", t0));
  ASSERT_TRUE(mark_cancelled(r, "api", "cancelled while waiting for health: api/http", t0));
  const Step& api = *find_step(r, "api");
  EXPECT_EQ(api.state(), Step::cancelled);
  EXPECT_TRUE(api.waiting_for().empty());
  EXPECT_TRUE(api.has_finished_at());
  auto next = next_actions(r, 4);
  EXPECT_EQ(next.skip.size(), 3U);
  ASSERT_TRUE(next.finish);
  EXPECT_EQ(*next.finish, Record::cancelled);
}

TEST(DeployState, MergeTakesOnlyACancelRequestFromOthers) {
  Record ours = three_waves();
  mark_running(ours, "replica-a", t0);
  ASSERT_TRUE(mark_started(ours, "api", "local", t0));
  Record theirs = three_waves();
  theirs.set_owner("replica-b");
  ASSERT_TRUE(request_cancel(theirs, "stop it", t0));
  merge_external(ours, theirs);
  EXPECT_TRUE(ours.cancel_requested());
  EXPECT_EQ(ours.cancel_reason(), "stop it");
  EXPECT_EQ(ours.owner(), "replica-a");
  EXPECT_EQ(find_step(ours, "api")->state(), Step::running);
}

TEST(DeployState, FailurePolicyNames) {
  EXPECT_EQ(parse_failure_policy("stop"), FailurePolicy::stop);
  EXPECT_EQ(parse_failure_policy("rollback"), FailurePolicy::rollback);
  EXPECT_FALSE(parse_failure_policy("Rollback"));
  EXPECT_FALSE(parse_failure_policy(""));
  EXPECT_STREQ(to_string(FailurePolicy::rollback), "rollback");
}

TEST(DeployState, DeployIdsAreSubjectTokensThatSortByTime) {
  const auto first = new_deploy_id(std::chrono::system_clock::time_point{} + 500000h);
  const auto later = new_deploy_id(std::chrono::system_clock::time_point{} + 500001h);
  const std::regex shape{"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$"};
  EXPECT_TRUE(std::regex_match(first, shape)) << first;
  EXPECT_LT(first, later);
  EXPECT_NE(new_deploy_id(std::chrono::system_clock::time_point{} + 500000h), first)
      << "random suffix";
}

}  // namespace
}  // namespace orgd::deploy
