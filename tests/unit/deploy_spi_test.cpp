// What the orchestrator does with the provider SPI v2 (DESIGN.md §8), on the deploy rig (memory
// KV, manual time, a scripted target): providers pace their own polling (next_poll_after); the
// link and detail line they report reach the record and events, bounded; a handle first learnt
// in poll is recorded; error kinds (permanent, retryable, rate-limited) decide what happens to
// the step; a cancel stops a running deploy through the provider; a rollback gets the last
// successful deploy before this one; gated phases wait for the health gate before advance.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "daemon/core/timestamps.hpp"
#include "daemon/deploy/deploy_state.hpp"
#include "tests/support/deploy_rig.hpp"

namespace orgd::testing {
namespace {

using namespace std::chrono_literals;
using Call = ScriptedTarget::Call;
using v1::DeployRecord;
using v1::DeployStep;

DeployRigSettings with_repos(std::string repos) {
  DeployRigSettings settings;
  settings.repos = std::move(repos);
  return settings;
}

constexpr const char* kGate = ", health_gate: {enabled: true, timeout: 30s, soak: 1s}";

// ---- Pacing -------------------------------------------------------------------------------------

TEST(DeploySpiPacing, APollIsMadeNoSoonerThanTheProviderAsked) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1").poll_after(10s)});
  rig.target->on_poll("api", {Outcome::running("run-1").poll_after(10s), Outcome::succeeded()});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  rig.advance(10s - 1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 0) << "the provider asked for 10s";
  rig.advance(1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 1);
  rig.advance(10s);
  EXPECT_EQ(rig.target->count("api", Call::poll), 2);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

TEST(DeploySpiPacing, AProviderCannotMakeOrgdPollFasterThanItsPollInterval) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1").poll_after(1ms)});
  rig.target->on_poll("api", {Outcome::running("run-1").poll_after(1ms).times(3)});
  rig.deploy({"api"});
  rig.run_until_idle();
  rig.advance(250ms - 1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 0);
  rig.advance(1ms + 2 * 250ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 3);
}

// ---- Link, detail and handle --------------------------------------------------------------------

TEST(DeploySpiProgress, TheLinkAndDetailReachTheRecordAndAnEventWhenTheyChange) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1").link("https://ci/runs/1", "queued")});
  rig.target->on_poll("api",
                      {Outcome::running("run-1").link("https://ci/runs/1", "queued").times(2),
                       Outcome::running("run-1").link("https://ci/runs/1", "in_progress")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.step(id, "api").url(), "https://ci/runs/1");
  EXPECT_EQ(rig.step(id, "api").detail(), "queued");
  rig.advance(3 * 250ms);
  EXPECT_EQ(rig.step(id, "api").detail(), "in_progress");
  std::vector<std::string> details;
  for (const auto& e : rig.publisher.events()) {
    if (e.kind() == "step_progress") details.push_back(e.step().detail());
  }
  EXPECT_EQ(details, (std::vector<std::string>{"queued", "in_progress"}))
      << "one event per change, none for the same line again";
}

TEST(DeploySpiProgress, AProvidersDetailIsBoundedAndMadePrintable) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  std::string detail = "bad \xff byte, a\ttab, then ";
  detail += std::string(2000, 'x');
  rig.target->on_start("api", {Outcome::running("run-1").link(std::string(5000, 'u'), detail)});
  rig.target->on_poll("api", {Outcome::running("run-1").times(100)});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  const DeployStep step = rig.step(id, "api");
  EXPECT_EQ(step.url().size(), deploy::kMaxStepUrl);
  EXPECT_EQ(step.detail().size(), deploy::kMaxStepDetail);
  EXPECT_EQ(step.detail().rfind("bad ? byte, a?tab, then x", 0), 0u) << step.detail();
}

TEST(DeploySpiProgress, AHandleFirstLearntInPollIsRecordedAndUsedFromThen) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  // The provider starts something it cannot name yet (a dispatched workflow whose run is found
  // later); the empty handle of a computed answer stays empty.
  rig.target->on_start("api", {Outcome::computed([](const DeployContext&) {
                         return Result<DeployProgress>(DeployProgress{DeployStatus::running});
                       })});
  rig.target->on_poll("api", {Outcome::running("run-77"), Outcome::running("run-77"),
                              Outcome::succeeded("run-77")});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_TRUE(rig.step(id, "api").handle().empty());
  rig.advance(250ms);
  EXPECT_EQ(rig.step(id, "api").handle(), "run-77") << "written as soon as poll told it";
  rig.advance(2 * 250ms);
  const auto polls = rig.target->calls("api", Call::poll);
  ASSERT_EQ(polls.size(), 3u);
  EXPECT_EQ(polls[0].handle, "");
  EXPECT_EQ(polls[1].handle, "run-77");
  EXPECT_EQ(polls[2].handle, "run-77");
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

TEST(DeploySpiPacing, NewsOfTheDeployMakesTheWaitingStepPollAtOnce) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1").poll_after(60s)});
  rig.target->on_poll("api", {Outcome::succeeded("run-1")});
  const std::string id = rig.deploy({"api"});
  rig.advance(1s);
  EXPECT_EQ(rig.shared->poll_now("scripted", "run-2"), 0) << "another deploy's news";
  EXPECT_EQ(rig.shared->poll_now("other", "run-1"), 0) << "another provider's handle";
  rig.run_until_idle();
  EXPECT_EQ(rig.target->count("api", Call::poll), 0);
  EXPECT_EQ(rig.shared->poll_now("scripted", "run-1"), 1);
  rig.run_until_idle();
  EXPECT_EQ(rig.target->count("api", Call::poll), 1) << "59s early";
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.shared->poll_now("scripted", "run-1"), 0) << "a finished step watches nothing";
}

// ---- Error kinds --------------------------------------------------------------------------------

TEST(DeploySpiErrors, APermanentStartErrorFailsTheStepAtOnceWhateverItsRetries) {
  DeployRig rig(with_repos(DeployRig::repo("api", ", retries: 3")));
  rig.target->on_start("api", {Outcome::error(permanent(invalid_argument("workflow not found")))});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "workflow not found");
  EXPECT_EQ(rig.step(id, "api").attempts(), 1);
  EXPECT_EQ(rig.target->count("api", Call::start), 1);
}

TEST(DeploySpiErrors, ARetryableStartErrorIsAskedAgainThroughRecoverWithoutUsingARetry) {
  DeployRig rig(with_repos(DeployRig::repo("api")));  // retries: 0
  rig.target->on_start("api", {Outcome::error(unavailable("502 Bad Gateway")), Outcome::succeeded()});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running);
  EXPECT_EQ(rig.target->count("api", Call::recover), 0) << "not before the backoff";
  rig.advance(5s);  // deploy.retry_backoff
  EXPECT_EQ(rig.target->count("api", Call::recover), 1)
      << "the lost answer may hide a deploy that started: asked before starting again";
  EXPECT_EQ(rig.target->count("api", Call::start), 2);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_EQ(rig.step(id, "api").attempts(), 1);
}

TEST(DeploySpiErrors, ARateLimitedStartWaitsAsTheApiSaid) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::error(rate_limited("rate limit exceeded", 60s)),
                               Outcome::succeeded()});
  const std::string id = rig.deploy({"api"});
  rig.run_until_idle();
  rig.advance(60s - 1ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 1) << "not before retry_after";
  EXPECT_EQ(rig.target->count("api", Call::recover), 0);
  rig.advance(1ms);
  EXPECT_EQ(rig.target->count("api", Call::start), 2);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

TEST(DeploySpiErrors, RetryableStartErrorsEndAtTheStepTimeout) {
  DeployRig rig(with_repos(DeployRig::repo("api", ", step_timeout: 20s")));
  rig.target->fallback("api", Call::start, Outcome::error(unavailable("503 Service Unavailable")));
  const std::string id = rig.deploy({"api"});
  rig.advance(2min);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "503 Service Unavailable");
  // 5s, 10s, then 20s: the third wait ends past the timeout.
  EXPECT_EQ(rig.target->count("api", Call::start), 3);
}

TEST(DeploySpiErrors, APermanentPollErrorFailsTheAttemptAtOnce) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1")});
  rig.target->on_poll("api", {Outcome::error(permanent(not_found("run 1 does not exist")))});
  const std::string id = rig.deploy({"api"});
  rig.advance(250ms);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.step(id, "api").error(), "poll failed: run 1 does not exist");
  EXPECT_EQ(rig.target->count("api", Call::poll), 1);
}

TEST(DeploySpiErrors, ARateLimitedPollWaitsAndDoesNotCountAsAnError) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->on_start("api", {Outcome::running("run-1")});
  rig.target->on_poll("api", {Outcome::error(rate_limited("secondary rate limit", 60s)).times(6),
                              Outcome::succeeded("run-1")});
  const std::string id = rig.deploy({"api"});
  rig.advance(250ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 1);
  rig.advance(60s - 1ms);
  EXPECT_EQ(rig.target->count("api", Call::poll), 1) << "not before retry_after";
  rig.advance(1ms + 5 * 60s);
  EXPECT_EQ(rig.target->count("api", Call::poll), 7);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded)
      << "six rate-limited polls are waits, not five errors in a row";
}

// ---- Cancel -------------------------------------------------------------------------------------

TEST(DeploySpiCancel, ACancelStopsARunningDeployThroughTheProvider) {
  DeployRig rig(with_repos(DeployRig::repo("api")));
  rig.target->set_can_cancel(true);
  rig.target->on_start("api", {Outcome::running("run-9")});
  rig.target->fallback("api", Call::poll, Outcome::running("run-9"));
  rig.target->on_cancel("api", {Outcome::running("run-9")});
  const std::string id = rig.deploy({"api"});
  rig.advance(1s);
  ASSERT_TRUE(rig.cancel(id, "operator"));
  rig.advance(5s);  // the run sees the request at its next look at the record
  ASSERT_EQ(rig.target->count("api", Call::cancel), 1);
  EXPECT_EQ(rig.target->calls("api", Call::cancel).front().handle, "run-9");
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::running) << "until the provider says it ended";
  rig.target->fallback("api", Call::poll, Outcome::failed("cancelled by orgd", "run-9"));
  rig.advance(1s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::cancelled);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::cancelled);
  EXPECT_EQ(rig.step(id, "api").error(), "cancelled while running: cancelled by orgd");
  EXPECT_EQ(rig.target->count("api", Call::cancel), 1) << "asked once";
}

TEST(DeploySpiCancel, ATargetThatCannotCancelRunsToItsEnd) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api")));
  rig.target->on_start("api", {Outcome::running("run-9")});
  rig.target->on_poll("api", {Outcome::running("run-9").times(30), Outcome::succeeded("run-9")});
  const std::string id = rig.deploy({"api", "web"});
  rig.advance(1s);
  ASSERT_TRUE(rig.cancel(id, "operator"));
  rig.advance(20s);
  EXPECT_EQ(rig.target->count("api", Call::cancel), 0);
  EXPECT_EQ(rig.step(id, "api").state(), DeployStep::succeeded);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::cancelled);
  EXPECT_EQ(rig.target->count("web", Call::start), 0);
}

// ---- Rollback to the previous successful deploy -------------------------------------------------

TEST(DeploySpiRollback, ARollbackGetsTheLastSuccessfulDeployOfItsRepoAndEnv) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api")));
  v1::DeployRequest first;
  first.set_env("dev");
  first.add_repos("api");
  first.set_ref("v1.0.0");
  rig.target->on_start("api", {Outcome::succeeded("release-100")});
  auto accepted = rig.deploy(first);
  ASSERT_TRUE(accepted);
  rig.run_until_idle();
  ASSERT_EQ(rig.record(accepted.value().deploy_id()).state(), DeployRecord::succeeded);
  rig.scheduler_tick();  // the last deploys are read from the records

  v1::DeployRequest second;
  second.set_env("dev");
  second.add_repos("api");
  second.add_repos("web");
  second.set_ref("v1.1.0");
  second.set_on_failure("rollback");
  rig.target->on_start("api", {Outcome::succeeded("release-101")});
  rig.target->on_start("web", {Outcome::failed("web is broken")});
  auto next = rig.deploy(second);
  ASSERT_TRUE(next);
  rig.run_until_idle();
  const std::string id = next.value().deploy_id();
  ASSERT_EQ(rig.record(id).state(), DeployRecord::rolled_back);
  EXPECT_EQ(rig.step(id, "api").previous().deploy_id(), accepted.value().deploy_id());
  const auto rollbacks = rig.target->calls("api", Call::rollback);
  ASSERT_EQ(rollbacks.size(), 1u);
  ASSERT_TRUE(rollbacks.front().context.previous.has_value());
  EXPECT_EQ(rollbacks.front().context.previous->ref, "v1.0.0");
  EXPECT_EQ(rollbacks.front().context.previous->handle, "release-100");
  EXPECT_EQ(rollbacks.front().context.previous->deploy_id, accepted.value().deploy_id());
  EXPECT_EQ(rollbacks.front().handle, "release-101") << "and the deploy it rolls back";
}

TEST(DeploySpiRollback, AFirstDeployHasNoPreviousDeploy) {
  DeployRig rig(with_repos(DeployRig::repo("api") + DeployRig::repo("web", "", "api")));
  rig.target->on_start("web", {Outcome::failed("web is broken")});
  const std::string id = rig.deploy({"api", "web"}, "rollback");
  rig.run_until_idle();
  EXPECT_FALSE(rig.step(id, "api").has_previous());
  const auto rollbacks = rig.target->calls("api", Call::rollback);
  ASSERT_EQ(rollbacks.size(), 1u);
  EXPECT_FALSE(rollbacks.front().context.previous.has_value());
}

// ---- Gated phases -------------------------------------------------------------------------------

TEST(DeploySpiPhases, EachPhaseWaitsForTheHealthGateBeforeTheProviderGoesOn) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  rig.target->on_start("api", {Outcome::running("v-1")});
  rig.target->on_poll("api", {Outcome::phase_done(1, "v-1").link("", "10% of traffic")});
  rig.target->on_advance("api", {Outcome::running("v-1").link("", "100% of traffic")});
  rig.target->fallback("api", Call::poll, Outcome::succeeded("v-1"));
  rig.health.set(FakeHealth::unhealthy({"http"}, "http no report since the phase"));
  const std::string id = rig.deploy({"api"});
  rig.advance(250ms);
  EXPECT_EQ(rig.step(id, "api").phase(), 1);
  EXPECT_TRUE(is_set(rig.step(id, "api").phase_done_at()));
  EXPECT_EQ(rig.step(id, "api").waiting_for(), "health: api/http");
  rig.advance(10s);
  EXPECT_EQ(rig.target->count("api", Call::advance), 0) << "not while the gate waits";
  EXPECT_EQ(rig.step(id, "api").detail(), "10% of traffic");
  rig.health.set(FakeHealth::healthy());
  rig.advance(1s + 250ms);  // the soak
  ASSERT_EQ(rig.target->count("api", Call::advance), 1);
  EXPECT_EQ(rig.target->calls("api", Call::advance).front().context.phases_passed, 1);
  EXPECT_EQ(rig.step(id, "api").phases_passed(), 1);
  rig.advance(5s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
  EXPECT_TRUE(rig.publisher.has("phase_done api"));
  EXPECT_TRUE(rig.publisher.has("phase_passed api"));
  EXPECT_TRUE(is_set(rig.step(id, "api").healthy_at())) << "and the final gate after the last";
}

TEST(DeploySpiPhases, APhaseThatFailsItsGateIsRolledBackAndFailsTheStep) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  rig.target->on_start("api", {Outcome::phase_done(1, "v-1")});
  rig.health.set(FakeHealth::unhealthy({"http"}, "http is down"));
  const std::string id = rig.deploy({"api"});
  rig.advance(31s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::failed);
  EXPECT_EQ(rig.target->count("api", Call::advance), 0);
  EXPECT_EQ(rig.target->count("api", Call::rollback), 1) << "the 10% go back";
  EXPECT_EQ(rig.step(id, "api").error(),
            "phase 1: health gate: not healthy within 30s: http is down; rolled back");
}

TEST(DeploySpiPhases, AResumedStepInAPhaseGateRunsTheGateAgainThenGoesOn) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  const std::string id = rig.left_by_a_crash("api", [&](DeployRecord& record) {
    deploy::mark_handle(record, "api", "v-1");
    deploy::mark_phase_done(record, "api", 1, rig.clock.now());
  });
  rig.target->on_advance("api", {Outcome::succeeded("v-1")});
  rig.resume(id);
  rig.run_until_idle();
  EXPECT_EQ(rig.target->count("api", Call::poll), 0);
  EXPECT_EQ(rig.target->count("api", Call::recover), 0);
  rig.advance(1s + 250ms);
  ASSERT_EQ(rig.target->count("api", Call::advance), 1);
  EXPECT_EQ(rig.target->calls("api", Call::advance).front().handle, "v-1");
  rig.advance(2s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

TEST(DeploySpiPhases, APhaseWhoseGatePassedBeforeACrashIsNotGatedAgain) {
  DeployRig rig(with_repos(DeployRig::repo("api", kGate)));
  const std::string id = rig.left_by_a_crash("api", [&](DeployRecord& record) {
    deploy::mark_handle(record, "api", "v-1");
    deploy::mark_phase_done(record, "api", 1, rig.clock.now());
    deploy::mark_phase_passed(record, "api", 1);
  });
  // The provider had not gone on when orgd died: it still says phase 1 is out.
  rig.target->on_poll("api", {Outcome::phase_done(1, "v-1")});
  rig.target->on_advance("api", {Outcome::running("v-1")});
  rig.target->fallback("api", Call::poll, Outcome::succeeded("v-1"));
  // A gate now would hold the step: it must not run.
  rig.health.set(FakeHealth::unhealthy({"http"}, "http is down"));
  rig.resume(id);
  rig.advance(250ms);
  EXPECT_EQ(rig.target->count("api", Call::advance), 1) << "straight on, no second gate";
  rig.health.set(FakeHealth::healthy());
  rig.advance(2s);
  EXPECT_EQ(rig.record(id).state(), DeployRecord::succeeded);
}

}  // namespace
}  // namespace orgd::testing
