#include "daemon/deploy/deploy_state.hpp"

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "daemon/core/timestamps.hpp"
#include "daemon/events/utf8.hpp"

namespace orgd::deploy {

namespace {

void set_time(google::protobuf::Timestamp* ts, Clock::time_point when) {
  *ts = to_timestamp(when);
}

// Deployed steps that can still be rolled back, latest deployment first.
const Step* next_rollback(const Record& record) {
  const Step* best = nullptr;
  auto order = [](const Step& s) {
    return std::make_tuple(s.deployed_at().seconds(), s.deployed_at().nanos(), s.wave(),
                           s.repo());
  };
  for (const Step& step : record.steps()) {
    if (step.state() != Step::succeeded && step.state() != Step::failed) continue;
    if (!is_set(step.deployed_at()) || !step.rollback_error().empty()) continue;
    if (best == nullptr || order(step) > order(*best)) best = &step;
  }
  return best;
}

}  // namespace

std::optional<FailurePolicy> parse_failure_policy(const std::string& text) {
  if (text == "stop") return FailurePolicy::stop;
  if (text == "rollback") return FailurePolicy::rollback;
  return std::nullopt;
}

const char* to_string(FailurePolicy policy) {
  return policy == FailurePolicy::rollback ? "rollback" : "stop";
}

bool is_terminal(Record::State state) {
  return state == Record::succeeded || state == Record::failed || state == Record::cancelled ||
         state == Record::rolled_back;
}

bool is_terminal(Step::State state) { return state != Step::pending && state != Step::running; }

Record new_record(const std::string& deploy_id, const std::vector<std::vector<std::string>>& waves,
                  const v1::DeployRequest& request, FailurePolicy policy, Clock::time_point now) {
  Record record;
  record.set_deploy_id(deploy_id);
  record.set_env(request.env());
  record.set_state(Record::pending);
  record.set_ref(request.ref());
  record.set_request_id(request.request_id());
  record.set_reason(request.reason());
  record.set_on_failure(to_string(policy));
  set_time(record.mutable_created_at(), now);
  set_time(record.mutable_updated_at(), now);
  for (std::size_t wave = 0; wave < waves.size(); ++wave) {
    for (const auto& repo : waves[wave]) {
      Step* step = record.add_steps();
      step->set_repo(repo);
      step->set_state(Step::pending);
      step->set_wave(static_cast<int>(wave));
    }
  }
  return record;
}

Step* find_step(Record& record, const std::string& repo) {
  for (Step& step : *record.mutable_steps()) {
    if (step.repo() == repo) return &step;
  }
  return nullptr;
}

const Step* find_step(const Record& record, const std::string& repo) {
  for (const Step& step : record.steps()) {
    if (step.repo() == repo) return &step;
  }
  return nullptr;
}

NextActions next_actions(const Record& record, int parallel) {
  NextActions next;
  if (is_terminal(record.state())) return next;
  int running = 0;
  bool failed = false;
  for (const Step& step : record.steps()) {
    if (step.state() == Step::running) ++running;
    // A rolled-back step was rolled back because of a failure, even when the failed step itself
    // has been rolled back since.
    if (step.state() == Step::failed || step.state() == Step::rolled_back) failed = true;
  }
  const bool cancel = record.cancel_requested();
  if (failed || cancel) {
    // Nothing new starts; running steps finish first.
    next.skip_as = failed ? Step::skipped : Step::cancelled;
    for (const Step& step : record.steps()) {
      if (step.state() == Step::pending) next.skip.push_back(step.repo());
    }
    if (running > 0) return next;
    if (failed && parse_failure_policy(record.on_failure()) == FailurePolicy::rollback) {
      if (const Step* step = next_rollback(record)) {
        next.rollback = step->repo();
        return next;
      }
      const bool all_rolled_back =
          std::none_of(record.steps().begin(), record.steps().end(), [](const Step& s) {
            return !s.rollback_error().empty() ||
                   (s.state() == Step::succeeded && is_set(s.deployed_at()));
          });
      next.finish = all_rolled_back ? Record::rolled_back : Record::failed;
      return next;
    }
    next.finish = failed ? Record::failed : Record::cancelled;
    return next;
  }
  // Waves are barriers: the first wave with a step not yet succeeded is the current one.
  int current = -1;
  for (const Step& step : record.steps()) {
    if (step.state() != Step::succeeded && (current < 0 || step.wave() < current)) {
      current = step.wave();
    }
  }
  if (current < 0) {
    next.finish = Record::succeeded;
    return next;
  }
  for (const Step& step : record.steps()) {
    if (running >= parallel) break;
    if (step.wave() == current && step.state() == Step::pending) {
      next.start.push_back(step.repo());
      ++running;
    }
  }
  return next;
}

bool mark_started(Record& record, const std::string& repo, const std::string& provider,
                  Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::pending) return false;
  step->set_state(Step::running);
  step->set_attempts(step->attempts() + 1);
  step->set_provider(provider);
  step->clear_error();
  set_time(step->mutable_started_at(), now);
  return true;
}

bool mark_handle(Record& record, const std::string& repo, const std::string& handle) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  step->set_handle(handle);
  return true;
}

// At most `max` bytes of `text`, cut at a character boundary, with bytes that are not UTF-8
// and control characters as '?': what a provider says goes into JSON records and events.
std::string bounded_text(std::string_view text, std::size_t max) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    if (*p < 0x80) {
      if (out.size() + 1 > max) break;
      out.push_back(*p < 0x20 || *p == 0x7f ? '?' : static_cast<char>(*p));
      ++p;
      continue;
    }
    std::uint32_t cp = 0;
    const int n = decode_utf8_sequence(p, end, cp);
    if (n == 0) {
      if (out.size() + 1 > max) break;
      out.push_back('?');
      ++p;
      continue;
    }
    if (out.size() + static_cast<std::size_t>(n) > max) break;
    out.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    p += n;
  }
  return out;
}

bool mark_progress(Record& record, const std::string& repo, std::string_view url,
                   std::string_view detail) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  const std::string u = bounded_text(url, kMaxStepUrl);
  const std::string d = bounded_text(detail, kMaxStepDetail);
  if (step->url() == u && step->detail() == d) return false;
  step->set_url(u);
  step->set_detail(d);
  return true;
}

bool mark_phase_done(Record& record, const std::string& repo, int phase, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || phase <= step->phases_passed() ||
      phase == step->phase()) {
    return false;
  }
  step->set_phase(phase);
  set_time(step->mutable_phase_done_at(), now);
  return true;
}

bool mark_phase_passed(Record& record, const std::string& repo, int phase) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || phase != step->phase() ||
      phase <= step->phases_passed()) {
    return false;
  }
  step->set_phases_passed(phase);
  step->clear_waiting_for();
  return true;
}

bool mark_previous(Record& record, const std::string& repo, const v1::PreviousDeploy& previous) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || step->has_previous()) return false;
  *step->mutable_previous() = previous;
  return true;
}

bool mark_deployed(Record& record, const std::string& repo, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || is_set(step->deployed_at())) {
    return false;
  }
  set_time(step->mutable_deployed_at(), now);
  return true;
}

bool mark_healthy(Record& record, const std::string& repo, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || !is_set(step->deployed_at())) {
    return false;
  }
  set_time(step->mutable_healthy_at(), now);
  return true;
}

bool mark_retrying(Record& record, const std::string& repo, const std::string& error) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  step->set_attempts(step->attempts() + 1);
  step->set_error(error);
  step->clear_handle();
  step->clear_deployed_at();
  step->clear_healthy_at();
  step->clear_waiting_for();
  step->clear_url();
  step->clear_detail();
  step->clear_phase();
  step->clear_phase_done_at();
  step->clear_phases_passed();
  return true;
}

bool mark_interrupted(Record& record, const std::string& repo, const std::string& error) {
  if (!mark_retrying(record, repo, error)) return false;
  Step* step = find_step(record, repo);
  step->set_interrupted_attempts(step->interrupted_attempts() + 1);
  return true;
}

int retries_used(const Step& step) {
  return std::max(0, step.attempts() - 1 - step.interrupted_attempts());
}

bool mark_waiting(Record& record, const std::string& repo, const std::string& what) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running || step->waiting_for() == what) {
    return false;
  }
  step->set_waiting_for(what);
  return true;
}

bool mark_cancelled(Record& record, const std::string& repo, const std::string& why,
                    Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  step->set_state(Step::cancelled);
  step->set_error(why);
  step->clear_waiting_for();
  set_time(step->mutable_finished_at(), now);
  return true;
}

bool mark_succeeded(Record& record, const std::string& repo, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  step->set_state(Step::succeeded);
  step->clear_error();
  step->clear_waiting_for();
  set_time(step->mutable_finished_at(), now);
  return true;
}

bool mark_failed(Record& record, const std::string& repo, const std::string& error,
                 Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::running) return false;
  step->set_state(Step::failed);
  step->set_error(error);
  step->clear_waiting_for();
  set_time(step->mutable_finished_at(), now);
  if (record.error().empty()) record.set_error(repo + ": " + error);
  return true;
}

bool mark_rolled_back(Record& record, const std::string& repo, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || (step->state() != Step::succeeded && step->state() != Step::failed)) {
    return false;
  }
  step->set_state(Step::rolled_back);
  set_time(step->mutable_finished_at(), now);
  return true;
}

bool mark_rollback_failed(Record& record, const std::string& repo, const std::string& error) {
  Step* step = find_step(record, repo);
  if (step == nullptr || !step->rollback_error().empty()) return false;
  step->set_rollback_error(error.empty() ? "rollback failed" : error);
  return true;
}

bool mark_skipped(Record& record, const std::string& repo, Step::State as, Clock::time_point now) {
  Step* step = find_step(record, repo);
  if (step == nullptr || step->state() != Step::pending) return false;
  step->set_state(as);
  set_time(step->mutable_finished_at(), now);
  return true;
}

bool request_cancel(Record& record, const std::string& reason, Clock::time_point now) {
  if (is_terminal(record.state())) return false;
  if (!record.cancel_requested()) {
    record.set_cancel_requested(true);
    record.set_cancel_reason(reason.empty() ? "cancelled" : reason);
    set_time(record.mutable_updated_at(), now);
  }
  return true;
}

void mark_finished(Record& record, Record::State state, Clock::time_point now) {
  record.set_state(state);
  set_time(record.mutable_finished_at(), now);
  if (state == Record::cancelled && record.error().empty()) {
    record.set_error("cancelled: " + record.cancel_reason());
  }
}

void mark_running(Record& record, const std::string& owner, Clock::time_point now) {
  if (is_terminal(record.state())) return;
  record.set_state(Record::running);
  record.set_owner(owner);
  if (!is_set(record.started_at())) set_time(record.mutable_started_at(), now);
}

void merge_external(Record& ours, const Record& theirs) {
  if (theirs.cancel_requested() && !ours.cancel_requested()) {
    ours.set_cancel_requested(true);
    ours.set_cancel_reason(theirs.cancel_reason());
  }
}

}  // namespace orgd::deploy
