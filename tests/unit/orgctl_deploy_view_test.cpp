// What `orgctl deploy` and `orgctl status` print: the plan, event lines, the live view's rows and
// how they survive events and records arriving out of order, and the exit code of a deploy.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "cli/deploy_commands.hpp"
#include "cli/deploy_view.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd::cli {
namespace {

using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using v1::DeployEvent;
using v1::DeployRecord;
using v1::DeployStep;

// 2026-01-02T12:00:00Z: event lines are checked in UTC so the tests do not depend on TZ.
const TimePoint kNoon = TimePoint{} + seconds{1767355200};

google::protobuf::ListValue wave(const std::vector<std::string>& repos) {
  google::protobuf::ListValue list;
  for (const auto& repo : repos) list.add_values()->set_string_value(repo);
  return list;
}

v1::DeployAccepted accepted(const std::string& id, const std::string& env,
                            const std::vector<std::vector<std::string>>& waves) {
  v1::DeployAccepted a;
  a.set_deploy_id(id);
  a.set_env(env);
  for (const auto& w : waves) *a.add_waves() = wave(w);
  return a;
}

DeployStep step(const std::string& repo, DeployStep::State state, int attempts) {
  DeployStep s;
  s.set_repo(repo);
  s.set_state(state);
  s.set_attempts(attempts);
  return s;
}

DeployEvent event(const std::string& kind, const DeployStep& s, TimePoint at) {
  DeployEvent e;
  e.set_deploy_id("d-1");
  e.set_kind(kind);
  *e.mutable_step() = s;
  *e.mutable_at() = to_timestamp(at);
  return e;
}

const DeployProgress::Row& row_of(const DeployProgress& progress, const std::string& repo) {
  for (const auto& r : progress.rows()) {
    if (r.repo == repo) return r;
  }
  ADD_FAILURE() << "no row for " << repo;
  static const DeployProgress::Row none;
  return none;
}

std::size_t code_points(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

std::vector<std::string> repos_of(const DeployProgress& progress) {
  std::vector<std::string> out;
  for (const auto& r : progress.rows()) out.push_back(r.repo);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The plan

TEST(OrgctlDeployPlan, PrintsIdEnvRefAndOneLinePerWave) {
  auto text = render_plan(accepted("d-1", "dev", {{"api"}, {"web", "worker"}}), "abc123");
  EXPECT_EQ(text,
            "deploy d-1 to dev (ref abc123)\n"
            "wave 1: api\n"
            "wave 2: web, worker\n");
}

TEST(OrgctlDeployPlan, DryRunSaysNothingWasDeployed) {
  auto a = accepted("", "dev", {{"api"}});
  a.set_dry_run(true);
  auto text = render_plan(a, "");
  EXPECT_THAT(text, HasSubstr("plan for dev (default ref)\n"));
  EXPECT_THAT(text, HasSubstr("wave 1: api\n"));
  EXPECT_THAT(text, HasSubstr("dry run: nothing was deployed"));
  EXPECT_THAT(render_plan(accepted("d-1", "dev", {{"api"}}), ""), Not(HasSubstr("dry run")));
}

TEST(OrgctlDeployPlan, DuplicateRequestSaysNothingNewStarted) {
  auto a = accepted("d-1", "dev", {{"api"}});
  a.set_duplicate(true);
  EXPECT_THAT(render_plan(a, ""), HasSubstr("accepted before"));
}

TEST(OrgctlDeployPlan, WavesSkipValuesThatAreNotStrings) {
  google::protobuf::ListValue w = wave({"api"});
  w.add_values()->set_number_value(3);
  w.add_values()->set_string_value("web");
  google::protobuf::RepeatedPtrField<google::protobuf::ListValue> waves;
  *waves.Add() = w;
  EXPECT_THAT(waves_of(waves), ElementsAre(ElementsAre("api", "web")));
}

// ---------------------------------------------------------------------------------------------
// Exit codes

TEST(OrgctlDeployExitCode, OnlySucceededIsZeroAndRunningIsNotFinal) {
  EXPECT_EQ(exit_code_for(DeployRecord::succeeded), ExitCode::ok);
  EXPECT_EQ(exit_code_for(DeployRecord::failed), ExitCode::failed);
  EXPECT_EQ(exit_code_for(DeployRecord::cancelled), ExitCode::failed);
  EXPECT_EQ(exit_code_for(DeployRecord::rolled_back), ExitCode::failed);
  EXPECT_EQ(exit_code_for(DeployRecord::running), std::nullopt);
  EXPECT_EQ(exit_code_for(DeployRecord::pending), std::nullopt);
  EXPECT_TRUE(is_terminal(DeployRecord::rolled_back));
  EXPECT_FALSE(is_terminal(DeployRecord::running));
}

// ---------------------------------------------------------------------------------------------
// Plain event lines

TEST(OrgctlDeployEventLine, StepEventsNameRepoKindAndAttempt) {
  EXPECT_EQ(format_event_line(event("step_started", step("api", DeployStep::running, 1), kNoon),
                              /*local_time=*/false),
            "12:00:00 api step_started (attempt 1)");
  auto failed = step("web", DeployStep::failed, 2);
  failed.set_error("exit status 1");
  EXPECT_EQ(format_event_line(event("step_failed", failed, kNoon + seconds{61}), false),
            "12:01:01 web step_failed (attempt 2): exit status 1");
  EXPECT_EQ(format_event_line(
                event("health_gate_passed", step("api", DeployStep::succeeded, 1), kNoon), false),
            "12:00:00 api health_gate_passed");
}

TEST(OrgctlDeployEventLine, LogLinesAreSanitized) {
  auto e = event("log", step("api", DeployStep::running, 1), kNoon);
  e.set_line("building\x1b[2J\tstep \x1b[1;31m3\x1b[0m\r\x01");
  EXPECT_EQ(format_event_line(e, false), "12:00:00 api log: building step 3??");
}

TEST(OrgctlDeployFormat, SanitizeDropsEscapeSequencesOfEveryShape) {
  EXPECT_EQ(sanitize_line("a\x1b]0;title\ab"), "ab");          // OSC ended by BEL
  EXPECT_EQ(sanitize_line("a\x1b]8;;http://x\x1b\\b"), "ab");  // OSC ended by ST
  EXPECT_EQ(sanitize_line("a\0337b"), "ab");                   // ESC 7: a two-byte escape
  EXPECT_EQ(sanitize_line("cut \x1b[1;3"), "cut");             // unterminated at the end
  EXPECT_EQ(sanitize_line("trailing\x1b"), "trailing?");
  EXPECT_EQ(sanitize_line("ünïcode stays"), "ünïcode stays");
}

TEST(OrgctlDeployEventLine, FinishedCarriesTheFinalState) {
  DeployEvent e = event("finished", DeployStep{}, kNoon);
  e.set_state(DeployRecord::rolled_back);
  EXPECT_EQ(format_event_line(e, false), "12:00:00 finished: rolled_back");
}

TEST(OrgctlDeployEventLine, UnknownKindsAndMissingTimeStillPrint) {
  DeployEvent e;
  e.set_kind("step_paused");
  e.mutable_step()->set_repo("api");
  EXPECT_EQ(format_event_line(e, false), "--:--:-- api step_paused");
}

// ---------------------------------------------------------------------------------------------
// Small formatters

TEST(OrgctlDeployFormat, Durations) {
  EXPECT_EQ(format_duration(seconds{0}), "0s");
  EXPECT_EQ(format_duration(seconds{59}), "59s");
  EXPECT_EQ(format_duration(seconds{65}), "1m05s");
  EXPECT_EQ(format_duration(seconds{7260}), "2h01m");
  EXPECT_EQ(format_duration(seconds{-5}), "0s");
}

TEST(OrgctlDeployFormat, TruncateCountsCodePointsAndNeverSplitsOne) {
  EXPECT_EQ(truncate_columns("abcdef", 6), "abcdef");
  EXPECT_EQ(truncate_columns("abcdef", 4), "abc…");
  // "é" is two bytes: cutting by bytes would leave half of it.
  EXPECT_EQ(truncate_columns("ééééé", 3), "éé…");
  EXPECT_EQ(truncate_columns("abc", 0), "");
}

TEST(OrgctlDeployFormat, StatusSummaryShowsStateIdShortRefAndAge) {
  v1::DeploySummary s;
  s.set_deploy_id("d-7");
  s.set_state(DeployRecord::succeeded);
  s.set_ref("0123456789abcdef0123456789abcdef01234567");
  *s.mutable_finished_at() = to_timestamp(kNoon - seconds{180});
  EXPECT_EQ(format_deploy_summary("dev", s, kNoon), "dev: succeeded (d-7, ref 0123456, 3m ago)");

  v1::DeploySummary running;
  running.set_state(DeployRecord::running);
  running.set_deploy_id("d-8");
  running.set_ref("main");
  EXPECT_EQ(format_deploy_summary("prod", running, kNoon), "prod: running (d-8, ref main)");
}

TEST(OrgctlDeployFormat, StatusSummariesAreSortedByEnv) {
  google::protobuf::Map<std::string, v1::DeploySummary> deploys;
  deploys["prod"].set_state(DeployRecord::failed);
  deploys["dev"].set_state(DeployRecord::succeeded);
  EXPECT_EQ(format_deploy_summaries(deploys, kNoon), "dev: succeeded; prod: failed");
}

TEST(OrgctlDeployFormat, RecordTableHasOneRowPerStepWithOneBasedWaves) {
  DeployRecord r;
  r.set_deploy_id("d-1");
  r.set_env("dev");
  r.set_ref("abc");
  r.set_state(DeployRecord::failed);
  r.set_error("web failed");
  auto* api = r.add_steps();
  *api = step("api", DeployStep::succeeded, 1);
  *api->mutable_started_at() = to_timestamp(kNoon - seconds{100});
  *api->mutable_finished_at() = to_timestamp(kNoon - seconds{55});
  *api->mutable_healthy_at() = to_timestamp(kNoon - seconds{55});
  auto* web = r.add_steps();
  *web = step("web", DeployStep::failed, 3);
  web->set_wave(1);
  web->set_error("exit status 2");
  auto text = render_deploy_record(r, kNoon);
  EXPECT_THAT(text, HasSubstr("deploy d-1 to dev (ref abc): failed\n"));
  EXPECT_THAT(text, HasSubstr("error: web failed\n"));
  EXPECT_THAT(text, HasSubstr("WAVE  REPO  STATE      ATTEMPTS  TOOK  HEALTHY  DETAIL\n"));
  EXPECT_THAT(text, HasSubstr("1     api   succeeded  1         45s   yes      -\n"));
  EXPECT_THAT(text, HasSubstr("2     web   failed     3         -     -        exit status 2\n"));
}

TEST(OrgctlDeployFormat, RecordShowsTheProvidersDetailPhaseAndLinks) {
  DeployRecord r;
  r.set_deploy_id("d-1");
  r.set_env("prod");
  r.set_state(DeployRecord::running);
  auto* api = r.add_steps();
  *api = step("api", DeployStep::running, 1);
  api->set_detail("run 1234: in_progress");
  api->set_url("https://github.com/acme/api/actions/runs/1234");
  auto* web = r.add_steps();
  *web = step("web", DeployStep::running, 1);
  web->set_phase(1);
  web->set_waiting_for("health: web/http");
  web->set_detail("10% of traffic");
  auto text = render_deploy_record(r, kNoon);
  EXPECT_THAT(text, HasSubstr("run 1234: in_progress\n"));
  EXPECT_THAT(text, HasSubstr("phase 1 out; waiting for health: web/http; 10% of traffic\n"));
  EXPECT_THAT(text,
              HasSubstr("links:\n  api: https://github.com/acme/api/actions/runs/1234\n"));
  EXPECT_THAT(text, Not(HasSubstr("  web: ")));

  EXPECT_EQ(format_event_line(event("step_progress", *api, kNoon), false),
            "12:00:00 api run 1234: in_progress (https://github.com/acme/api/actions/runs/1234)");
  EXPECT_EQ(format_event_line(event("phase_done", *web, kNoon), false),
            "12:00:00 web phase_done (phase 1)");
}

TEST(OrgctlDeployFormat, ListTableAndEmptyList) {
  v1::DeployList list;
  EXPECT_EQ(render_deploy_list(list, kNoon), "no deploys\n");
  auto* r = list.add_deploys();
  r->set_deploy_id("d-2");
  r->set_env("dev");
  r->set_state(DeployRecord::running);
  *r->add_steps() = step("api", DeployStep::succeeded, 1);
  *r->add_steps() = step("web", DeployStep::running, 1);
  *r->mutable_created_at() = to_timestamp(kNoon - seconds{30});
  EXPECT_EQ(render_deploy_list(list, kNoon),
            "ID   ENV  STATE    REPOS    CREATED\n"
            "d-2  dev  running  api,web  30s ago\n");
}

TEST(OrgctlDeployFormat, AListedDeployWithMoreStepsSaysHowManyMore) {
  v1::DeployList list;
  auto* r = list.add_deploys();
  r->set_deploy_id("d-3");
  r->set_env("dev");
  r->set_state(DeployRecord::running);
  *r->add_steps() = step("api", DeployStep::succeeded, 1);
  r->set_total_steps(5000);
  *r->mutable_created_at() = to_timestamp(kNoon - seconds{30});
  EXPECT_EQ(render_deploy_list(list, kNoon),
            "ID   ENV  STATE    REPOS           CREATED\n"
            "d-3  dev  running  api +4999 more  30s ago\n");
}

// ---------------------------------------------------------------------------------------------
// The live view model

DeployProgress planned() {
  DeployProgress p("d-1");
  p.set_plan({{"api"}, {"web", "worker"}}, "dev", "abc");
  return p;
}

TEST(OrgctlDeployProgress, PlanGivesPendingRowsInWaveOrder) {
  auto p = planned();
  EXPECT_THAT(repos_of(p), ElementsAre("api", "web", "worker"));
  EXPECT_EQ(row_of(p, "web").wave, 1);
  EXPECT_EQ(row_of(p, "web").step.state(), DeployStep::pending);
  EXPECT_FALSE(p.finished());
}

TEST(OrgctlDeployProgress, EventsMoveStepsAndKeepTheLastLogLine) {
  auto p = planned();
  p.apply(event("step_started", step("api", DeployStep::running, 1), kNoon));
  auto log = event("log", step("api", DeployStep::running, 1), kNoon + seconds{1});
  log.set_line("pulling image");
  p.apply(log);
  log.set_line("starting");
  p.apply(log);
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::running);
  EXPECT_EQ(row_of(p, "api").last_line, "starting");
  p.apply(event("step_succeeded", step("api", DeployStep::succeeded, 1), kNoon + seconds{5}));
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::succeeded);
}

TEST(OrgctlDeployProgress, AnOlderRecordDoesNotUndoNewerEvents) {
  auto p = planned();
  p.apply(event("step_succeeded", step("api", DeployStep::succeeded, 1), kNoon));
  p.apply(event("step_started", step("web", DeployStep::running, 2), kNoon));
  DeployRecord stale;
  stale.set_state(DeployRecord::running);
  *stale.add_steps() = step("api", DeployStep::running, 1);
  *stale.add_steps() = step("web", DeployStep::running, 1);
  *stale.add_steps() = step("worker", DeployStep::running, 1);
  auto moved = p.apply(stale);
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::succeeded);
  EXPECT_EQ(row_of(p, "web").step.attempts(), 2);
  // Only worker's step was news: plain mode prints just that one.
  EXPECT_THAT(moved, ElementsAre("worker"));
}

TEST(OrgctlDeployProgress, ANewerRecordFillsInMissedEvents) {
  auto p = planned();
  DeployRecord r;
  r.set_state(DeployRecord::running);
  *r.add_steps() = step("api", DeployStep::succeeded, 1);
  auto moved = p.apply(r);
  EXPECT_THAT(moved, ElementsAre("api"));
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::succeeded);
  EXPECT_EQ(p.state(), DeployRecord::running);
  EXPECT_FALSE(p.finished());
}

TEST(OrgctlDeployProgress, RollbackComesAfterSuccess) {
  auto p = planned();
  p.apply(event("step_succeeded", step("api", DeployStep::succeeded, 1), kNoon));
  p.apply(event("rolled_back", step("api", DeployStep::rolled_back, 1), kNoon));
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::rolled_back);
  // A late copy of the success must not bring it back.
  p.apply(event("step_succeeded", step("api", DeployStep::succeeded, 1), kNoon));
  EXPECT_EQ(row_of(p, "api").step.state(), DeployStep::rolled_back);
}

TEST(OrgctlDeployProgress, SameStepAgainKeepsHealthGateAndError) {
  auto p = planned();
  auto healthy = step("api", DeployStep::succeeded, 1);
  *healthy.mutable_healthy_at() = to_timestamp(kNoon);
  p.apply(event("health_gate_passed", healthy, kNoon));
  DeployRecord older;
  *older.add_steps() = step("api", DeployStep::succeeded, 1);
  p.apply(older);
  EXPECT_TRUE(is_set(row_of(p, "api").step.healthy_at()));
}

TEST(OrgctlDeployProgress, FinishedEventEndsWithItsState) {
  auto p = planned();
  auto e = event("finished", DeployStep{}, kNoon);
  e.set_state(DeployRecord::failed);
  p.apply(e);
  EXPECT_TRUE(p.finished());
  EXPECT_EQ(p.state(), DeployRecord::failed);
  EXPECT_EQ(exit_code_for(p.state()), ExitCode::failed);
}

TEST(OrgctlDeployProgress, TerminalRecordEndsTheFollowEvenWithoutEvents) {
  auto p = planned();
  DeployRecord r;
  r.set_state(DeployRecord::succeeded);
  p.apply(r);
  EXPECT_TRUE(p.finished());
  EXPECT_EQ(exit_code_for(p.state()), ExitCode::ok);
}

TEST(OrgctlDeployProgress, EventsWithoutRecordStateDoNotResetIt) {
  auto p = planned();
  auto started = event("step_started", step("api", DeployStep::running, 1), kNoon);
  started.set_state(DeployRecord::running);
  p.apply(started);
  // A log event leaves state at its default (pending).
  p.apply(event("log", step("api", DeployStep::running, 1), kNoon));
  EXPECT_EQ(p.state(), DeployRecord::running);
}

TEST(OrgctlDeployProgress, AcceptedEventGivesThePlanWhenFollowingById) {
  DeployProgress p("d-1");
  DeployEvent e = event("accepted", DeployStep{}, kNoon);
  *e.add_waves() = wave({"api"});
  *e.add_waves() = wave({"web"});
  p.apply(e);
  EXPECT_THAT(repos_of(p), ElementsAre("api", "web"));
  EXPECT_EQ(row_of(p, "web").wave, 1);
}

TEST(OrgctlDeployProgress, UnplannedRepoFromARecordTakesItsWave) {
  DeployProgress p("d-1");
  DeployRecord r;
  auto s = step("web", DeployStep::pending, 0);
  s.set_wave(1);
  *r.add_steps() = s;
  *r.add_steps() = step("api", DeployStep::running, 1);
  p.apply(r);
  EXPECT_THAT(repos_of(p), ElementsAre("api", "web"));
}

TEST(OrgctlDeployProgress, RenderShowsHeaderAndOneLinePerRepoWithinWidth) {
  auto p = planned();
  auto started = step("api", DeployStep::running, 1);
  *started.mutable_started_at() = to_timestamp(kNoon - seconds{12});
  auto e = event("step_started", started, kNoon - seconds{12});
  e.set_state(DeployRecord::running);
  p.apply(e);
  auto log = event("log", started, kNoon);
  log.set_line("a very long line of provider output that does not fit");
  p.apply(log);
  auto lines = p.render(kNoon, 200);
  ASSERT_EQ(lines.size(), 4U);
  EXPECT_EQ(lines[0], "deploy d-1 to dev (ref abc): running  12s");
  EXPECT_EQ(lines[1],
            "  1 api     running              #1      12s  a very long line of provider output "
            "that does not fit");
  EXPECT_EQ(lines[2], "  2 web     pending");
  // One column short of the width: writing the last column makes some terminals wrap.
  for (const auto& line : p.render(kNoon, 40)) EXPECT_LE(code_points(line), 39U) << line;
  EXPECT_THAT(p.render(kNoon, 40)[1], HasSubstr("…"));
}

TEST(OrgctlDeployProgress, RenderShowsAFailedStepsError) {
  auto p = planned();
  auto failed = step("api", DeployStep::failed, 2);
  failed.set_error("provider said no");
  p.apply(event("step_failed", failed, kNoon));
  EXPECT_THAT(p.render(kNoon, 200)[1], HasSubstr("error: provider said no"));
}

TEST(OrgctlDeployProgress, AnsiRedrawMovesUpOverThePreviousFrameOnly) {
  EXPECT_EQ(ansi_redraw({"a", "b"}, 0), "\r\x1b[2Ka\n\r\x1b[2Kb\n\x1b[J");
  EXPECT_EQ(ansi_redraw({"a"}, 3), "\x1b[3A\r\x1b[2Ka\n\x1b[J");
}

TEST(OrgctlDeployRequestId, RandomHexOfFixedLength) {
  auto a = random_request_id();
  auto b = random_request_id();
  EXPECT_EQ(a.size(), 32U);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
}

// ---------------------------------------------------------------------------------------------
// A step waiting for its health gate, and a step that was not rolled back

DeployStep waiting_step() {
  auto s = step("api", DeployStep::running, 1);
  s.set_waiting_for("health: api/http");
  return s;
}

DeployStep not_rolled_back() {
  auto s = step("api", DeployStep::succeeded, 1);
  s.set_rollback_error("provider local cannot roll this target back");
  return s;
}

TEST(OrgctlDeployEventLine, GateWaitsAndMissedRollbacksSayWhy) {
  EXPECT_EQ(format_event_line(event("health_gate_waiting", waiting_step(), kNoon), false),
            "12:00:00 api waiting for health: api/http");
  EXPECT_EQ(format_event_line(event("rollback_failed", not_rolled_back(), kNoon), false),
            "12:00:00 api not rolled back: provider local cannot roll this target back");
  auto again = step("api", DeployStep::running, 2);
  again.set_error("interrupted: orgd stopped while the command ran");
  EXPECT_EQ(format_event_line(event("step_interrupted", again, kNoon), false),
            "12:00:00 api step_interrupted (now attempt 2): interrupted: orgd stopped while the "
            "command ran");
}

TEST(OrgctlDeployFormat, RecordTableSaysWhatAStepWaitsForAndWhyItWasNotRolledBack) {
  DeployRecord r;
  r.set_deploy_id("d-1");
  r.set_env("dev");
  r.set_state(DeployRecord::running);
  *r.add_steps() = waiting_step();
  auto* web = r.add_steps();
  *web = not_rolled_back();
  web->set_repo("web");
  auto text = render_deploy_record(r, kNoon);
  EXPECT_THAT(text, HasSubstr("api   running    1         -     -        waiting for health: "
                              "api/http\n"));
  EXPECT_THAT(text, HasSubstr("web   succeeded  1         -     -        not rolled back: provider "
                              "local cannot roll this target back\n"));
}

TEST(OrgctlDeployProgress, LiveViewShowsTheGateWaitUntilTheStepMovesOn) {
  auto p = planned();
  p.apply(event("step_started", step("api", DeployStep::running, 1), kNoon));
  p.apply(event("health_gate_waiting", waiting_step(), kNoon));
  EXPECT_THAT(p.render(kNoon, 200)[1], HasSubstr("waiting for health: api/http"));
  p.apply(event("step_succeeded", step("api", DeployStep::succeeded, 1), kNoon));
  EXPECT_THAT(p.render(kNoon, 200)[1], Not(HasSubstr("waiting for")));
  auto cancelled = step("web", DeployStep::cancelled, 1);
  cancelled.set_error("cancelled while waiting for health: web/http");
  p.apply(event("step_cancelled", cancelled, kNoon));
  EXPECT_THAT(p.render(kNoon, 200)[2], HasSubstr("cancelled while waiting for health: web/http"));
  p.apply(event("rollback_failed", not_rolled_back(), kNoon));
  EXPECT_THAT(p.render(kNoon, 200)[1],
              HasSubstr("not rolled back: provider local cannot roll this target back"));
}

}  // namespace
}  // namespace orgd::cli
