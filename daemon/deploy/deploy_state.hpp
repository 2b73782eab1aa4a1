#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/clock.hpp"
#include "orgd/v1/deploy.pb.h"

// The deploy state machine, as pure functions on a DeployRecord: what to do next and how each
// outcome changes the record. The orchestrator persists every change (revision-checked) before
// it acts on it, so any replica can pick up a record and carry on from exactly here.
namespace orgd::deploy {

using Record = v1::DeployRecord;
using Step = v1::DeployStep;

enum class FailurePolicy { stop, rollback };
std::optional<FailurePolicy> parse_failure_policy(const std::string& text);
const char* to_string(FailurePolicy policy);

bool is_terminal(Record::State state);
bool is_terminal(Step::State state);

// A new record in state pending: one step per repo, in wave order.
Record new_record(const std::string& deploy_id, const std::vector<std::vector<std::string>>& waves,
                  const v1::DeployRequest& request, FailurePolicy policy, Clock::time_point now);

// What the orchestrator should do next with a record.
struct NextActions {
  // Steps to start (pending steps of the first wave not yet done), at most `parallel` running.
  std::vector<std::string> start;
  // A step to roll back (one at a time, in reverse order of deployment).
  std::optional<std::string> rollback;
  // Nothing is running or left to do: the record's final state.
  std::optional<Record::State> finish;
  // Steps that will never run (a failure under `stop`, or a cancel): mark them skipped or
  // cancelled at once, so progress shows it.
  std::vector<std::string> skip;
  Step::State skip_as = Step::skipped;
};

NextActions next_actions(const Record& record, int parallel);

Step* find_step(Record& record, const std::string& repo);
const Step* find_step(const Record& record, const std::string& repo);

// Transitions. Each returns false (and changes nothing) when the step is not in a state the
// transition applies to, so a replayed outcome cannot move a step backwards.
bool mark_started(Record& record, const std::string& repo, const std::string& provider,
                  Clock::time_point now);
bool mark_handle(Record& record, const std::string& repo, const std::string& handle);
// At most `max` bytes of a provider's text, cut at a character boundary, with what is not
// printable UTF-8 as '?'.
std::string bounded_text(std::string_view text, std::size_t max);
// A provider's link and detail line are kept to these sizes in the record.
constexpr std::size_t kMaxStepUrl = 2048;
constexpr std::size_t kMaxStepDetail = 300;
// The provider's link and detail line; false when they did not change.
bool mark_progress(Record& record, const std::string& repo, std::string_view url,
                   std::string_view detail);
// A gated phase is out (its gate runs next) / passed its gate (the provider goes on).
bool mark_phase_done(Record& record, const std::string& repo, int phase, Clock::time_point now);
bool mark_phase_passed(Record& record, const std::string& repo, int phase);
// What a rollback of the step returns to; written once, when the step starts.
bool mark_previous(Record& record, const std::string& repo, const v1::PreviousDeploy& previous);
bool mark_deployed(Record& record, const std::string& repo, Clock::time_point now);
bool mark_healthy(Record& record, const std::string& repo, Clock::time_point now);
// A failed attempt that will be retried: the step stays running, its deploy state is reset.
bool mark_retrying(Record& record, const std::string& repo, const std::string& error);
// An attempt that orgd's stop or crash ended (the provider says "interrupted"): like a retry, but
// it does not count against the step's retries.
bool mark_interrupted(Record& record, const std::string& repo, const std::string& error);
// The retries a step has used: its attempts after the first, less the interrupted ones.
int retries_used(const Step& step);
// What a running step waits for now (empty: nothing); false when it already says so.
bool mark_waiting(Record& record, const std::string& repo, const std::string& what);
// A running step that a cancel ended before it finished (e.g. while its health gate waited).
bool mark_cancelled(Record& record, const std::string& repo, const std::string& why,
                    Clock::time_point now);
bool mark_succeeded(Record& record, const std::string& repo, Clock::time_point now);
bool mark_failed(Record& record, const std::string& repo, const std::string& error,
                 Clock::time_point now);
bool mark_rolled_back(Record& record, const std::string& repo, Clock::time_point now);
bool mark_rollback_failed(Record& record, const std::string& repo, const std::string& error);
bool mark_skipped(Record& record, const std::string& repo, Step::State as, Clock::time_point now);
// Asks the deploy to stop; false when it already finished.
bool request_cancel(Record& record, const std::string& reason, Clock::time_point now);
void mark_finished(Record& record, Record::State state, Clock::time_point now);
void mark_running(Record& record, const std::string& owner, Clock::time_point now);

// The record as another replica left it, merged into ours after a failed compare-and-set: a
// cancel request is the only change others make to a deploy they do not run.
void merge_external(Record& ours, const Record& theirs);

}  // namespace orgd::deploy
