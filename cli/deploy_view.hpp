#pragma once

// What `orgctl deploy` and `orgctl status` print about deploys. Everything here is pure (time and
// terminal width are parameters), so the formatting is unit-tested without a daemon or a TTY.

#include <google/protobuf/map.h>
#include <google/protobuf/repeated_ptr_field.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/timestamp.pb.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.hpp"
#include "daemon/core/timestamps.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd::cli {

using Waves = std::vector<std::vector<std::string>>;

// The waves of DeployAccepted / the accepted event (JSON arrays of repo names); anything that is
// not a string is skipped rather than trusted.
Waves waves_of(const google::protobuf::RepeatedPtrField<google::protobuf::ListValue>& waves);

// "deploy d-1 to dev (ref abc)\nwave 1: api\nwave 2: web, worker\n"; with dry_run, says that
// nothing was deployed.
std::string render_plan(const v1::DeployAccepted& accepted, const std::string& ref);

// 0 for succeeded, 1 for failed, cancelled and rolled_back; nullopt while the deploy still runs.
std::optional<ExitCode> exit_code_for(v1::DeployRecord::State state);
bool is_terminal(v1::DeployRecord::State state);

std::string state_name(v1::DeployRecord::State state);
std::string state_name(v1::DeployStep::State state);

// "45s", "3m05s", "2h10m".
std::string format_duration(std::chrono::seconds d);
// "12s ago", "3m ago", "2h ago", "4d ago"; "-" for an unset timestamp.
std::string format_age(const google::protobuf::Timestamp& ts, TimePoint now);

// Provider output may carry escape sequences and control characters; printed raw they would move
// the cursor or recolour the operator's terminal. Escape sequences are dropped, tabs become
// spaces, other control characters '?'.
std::string sanitize_line(std::string_view line);
// Cuts `text` to at most `columns` code points (never inside a UTF-8 sequence), ending in "…"
// when something was cut.
std::string truncate_columns(std::string_view text, std::size_t columns);

// Left-aligned columns two spaces apart; the last column is not padded.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

// HH:MM:SS of `t`, in local time or UTC.
std::string clock_time(TimePoint t, bool local_time);

// One plain line per event: "12:00:01 api step_started (attempt 1)", "12:00:02 api log: …",
// "12:00:09 finished: succeeded".
std::string format_event_line(const v1::DeployEvent& event, bool local_time);

// One environment's last deploy of a repo, for `orgctl status`:
// "dev: succeeded (d-1, ref abc1234, 3m ago)".
std::string format_deploy_summary(const std::string& env, const v1::DeploySummary& summary,
                                  TimePoint now);
// Every environment of a repo, sorted by name, separated by "; ".
std::string format_deploy_summaries(
    const google::protobuf::Map<std::string, v1::DeploySummary>& deploys, TimePoint now);

// What a step's row says beside its state: "waiting for health: api/http" while its gate waits,
// its error (with `with_error`), "not rolled back: <why>" when a rollback did not happen; parts
// joined by "; ", empty when there is nothing to say.
std::string step_detail(const v1::DeployStep& step, bool with_error = true);

// `orgctl deploy get`: a header and one row per step (DETAIL: step_detail).
std::string render_deploy_record(const v1::DeployRecord& record, TimePoint now);
// `orgctl deploy list`: ID, ENV, STATE, REPOS, CREATED.
std::string render_deploy_list(const v1::DeployList& list, TimePoint now);

// The progress of one deploy as events and records arrive, in any order and possibly twice:
// the catch-up deploy.get may be older or newer than the events already seen, so a step only
// ever moves forward (more attempts, or a later state) and a terminal record state sticks.
class DeployProgress {
 public:
  struct Row {
    std::string repo;
    int wave = 0;  // 0-based, as DeployStep.wave; shown 1-based
    v1::DeployStep step;
    std::string last_line;
  };

  explicit DeployProgress(std::string deploy_id) : deploy_id_(std::move(deploy_id)) {}

  // Rows in wave order from the plan; the steps start as pending.
  void set_plan(const Waves& waves, const std::string& env, const std::string& ref);
  // Returns the repos whose step moved forward (plain mode prints them: the events for those
  // changes were missed).
  std::vector<std::string> apply(const v1::DeployRecord& record);
  void apply(const v1::DeployEvent& event);

  const std::string& deploy_id() const { return deploy_id_; }
  v1::DeployRecord::State state() const { return state_; }
  bool finished() const { return finished_; }
  const std::string& error() const { return error_; }
  const std::vector<Row>& rows() const { return rows_; }

  // The live view: a header line and one line per repo, each cut to `columns`.
  std::vector<std::string> render(TimePoint now, std::size_t columns) const;

 private:
  Row& row(const std::string& repo);
  bool merge_step(Row& row, const v1::DeployStep& step);
  void merge_state(v1::DeployRecord::State state);

  std::string deploy_id_;
  std::string env_;
  std::string ref_;
  std::vector<Row> rows_;
  v1::DeployRecord::State state_ = v1::DeployRecord::pending;
  bool finished_ = false;
  std::string error_;
  std::optional<TimePoint> started_;
  std::optional<TimePoint> finished_at_;
};

// The bytes that replace the `previous_lines` lines printed last by the live view with `lines`:
// cursor up, then each line cleared and rewritten, then any leftover old lines cleared.
std::string ansi_redraw(const std::vector<std::string>& lines, std::size_t previous_lines);

}  // namespace orgd::cli
