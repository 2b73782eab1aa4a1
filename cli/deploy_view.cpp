#include "cli/deploy_view.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <utility>

namespace orgd::cli {
namespace {

using v1::DeployRecord;
using v1::DeployStep;

// Later states rank higher; a merge never goes back to a lower rank. rolled_back comes after the
// other ends because a failed deploy with on_failure=rollback finishes as rolled_back.
int rank(DeployRecord::State s) {
  switch (s) {
    case DeployRecord::pending:
      return 0;
    case DeployRecord::running:
      return 1;
    case DeployRecord::rolled_back:
      return 3;
    default:
      return 2;
  }
}

int rank(DeployStep::State s) {
  switch (s) {
    case DeployStep::pending:
      return 0;
    case DeployStep::running:
      return 1;
    case DeployStep::rolled_back:
      return 3;
    default:
      return 2;
  }
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::string ref_text(const std::string& ref) { return ref.empty() ? "default ref" : "ref " + ref; }

// A full git SHA says no more in a summary than its first 7 characters do.
std::string short_ref(const std::string& ref) {
  bool sha = ref.size() == 40 && std::all_of(ref.begin(), ref.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             });
  return sha ? ref.substr(0, 7) : ref;
}

std::chrono::seconds seconds_between(TimePoint from, TimePoint to) {
  return std::chrono::duration_cast<std::chrono::seconds>(to - from);
}

// How long a step ran (or has been running): "-" before it started.
std::string step_took(const DeployStep& step, TimePoint now) {
  if (!is_set(step.started_at())) return "-";
  TimePoint end = is_set(step.finished_at()) ? from_timestamp(step.finished_at()) : now;
  return format_duration(seconds_between(from_timestamp(step.started_at()), end));
}


}  // namespace

// Left-aligned columns two spaces apart; the last column is not padded, so long errors do not
// widen every row.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(header.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);
  std::string out;
  auto write = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i + 1 == row.size()) {
        line += row[i];
      } else {
        line += fmt::format("{:<{}}  ", row[i], widths[i]);
      }
    }
    out += line + "\n";
  };
  write(header);
  for (const auto& row : rows) write(row);
  return out;
}

Waves waves_of(const google::protobuf::RepeatedPtrField<google::protobuf::ListValue>& waves) {
  Waves out;
  for (const auto& wave : waves) {
    std::vector<std::string> repos;
    for (const auto& value : wave.values()) {
      if (value.kind_case() == google::protobuf::Value::kStringValue) {
        repos.push_back(value.string_value());
      }
    }
    out.push_back(std::move(repos));
  }
  return out;
}

std::string render_plan(const v1::DeployAccepted& accepted, const std::string& ref) {
  std::string out;
  if (accepted.deploy_id().empty()) {
    out += fmt::format("plan for {} ({})\n", accepted.env(), ref_text(ref));
  } else {
    out +=
        fmt::format("deploy {} to {} ({})\n", accepted.deploy_id(), accepted.env(), ref_text(ref));
  }
  if (accepted.duplicate()) {
    out += "this request was accepted before: showing that deploy, nothing new was started\n";
  }
  auto waves = waves_of(accepted.waves());
  for (std::size_t i = 0; i < waves.size(); ++i) {
    out += fmt::format("wave {}: {}\n", i + 1, join(waves[i], ", "));
  }
  if (waves.empty()) out += "nothing to deploy\n";
  if (accepted.dry_run()) out += "dry run: nothing was deployed\n";
  return out;
}

bool is_terminal(DeployRecord::State state) { return exit_code_for(state).has_value(); }

std::optional<ExitCode> exit_code_for(DeployRecord::State state) {
  switch (state) {
    case DeployRecord::succeeded:
      return ExitCode::ok;
    case DeployRecord::failed:
    case DeployRecord::cancelled:
    case DeployRecord::rolled_back:
      return ExitCode::failed;
    default:
      return std::nullopt;
  }
}

std::string state_name(DeployRecord::State state) {
  const auto& name = DeployRecord::State_Name(state);
  return name.empty() ? fmt::format("state-{}", static_cast<int>(state)) : name;
}

std::string state_name(DeployStep::State state) {
  const auto& name = DeployStep::State_Name(state);
  return name.empty() ? fmt::format("state-{}", static_cast<int>(state)) : name;
}

std::string format_duration(std::chrono::seconds d) {
  auto s = std::max<int64_t>(d.count(), 0);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

std::string format_age(const google::protobuf::Timestamp& ts, TimePoint now) {
  if (!is_set(ts)) return "-";
  auto s = std::max<int64_t>(seconds_between(from_timestamp(ts), now).count(), 0);
  if (s < 120) return fmt::format("{}s ago", s);
  if (s < 7200) return fmt::format("{}m ago", s / 60);
  return fmt::format("{}h ago", s / 3600);
}

std::string sanitize_line(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    auto u = static_cast<unsigned char>(c);
    if (c == '\x1b' && i + 1 < line.size()) {
      // Build tools colour their output: drop the sequence (CSI up to its final byte, OSC up to
      // BEL or ST, anything else with its one following character) rather than show it as noise.
      char kind = line[++i];
      if (kind == '[') {
        while (i + 1 < line.size() && !(line[i + 1] >= 0x40 && line[i + 1] <= 0x7e)) ++i;
        ++i;
      } else if (kind == ']') {
        while (i + 1 < line.size() && line[i + 1] != '\a' && line[i + 1] != '\x1b') ++i;
        ++i;
        if (i < line.size() && line[i] == '\x1b') ++i;  // ST is ESC '\\'
      }
    } else if (c == '\t') {
      out += ' ';
    } else if (u < 0x20 || u == 0x7f) {
      out += '?';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string truncate_columns(std::string_view text, std::size_t columns) {
  // Code points, not bytes: a continuation byte (10xxxxxx) never starts a column.
  std::size_t points = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++points;
  }
  if (points <= columns) return std::string(text);
  if (columns == 0) return {};
  std::size_t keep = columns - 1;  // room for the ellipsis
  std::size_t seen = 0;
  std::size_t end = 0;
  for (; end < text.size(); ++end) {
    if ((static_cast<unsigned char>(text[end]) & 0xC0) != 0x80) {
      if (seen == keep) break;
      ++seen;
    }
  }
  return std::string(text.substr(0, end)) + "…";
}

std::string clock_time(TimePoint t, bool local_time) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  if (local_time) {
    localtime_r(&secs, &tm);
  } else {
    gmtime_r(&secs, &tm);
  }
  return fmt::format("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string format_event_line(const v1::DeployEvent& event, bool local_time) {
  std::string when = is_set(event.at()) ? clock_time(from_timestamp(event.at()), local_time)
                                        : std::string("--:--:--");
  const auto& step = event.step();
  std::string who = step.repo().empty() ? "" : step.repo() + " ";
  std::string error = step.error().empty() ? "" : ": " + sanitize_line(step.error());
  const std::string& kind = event.kind();
  std::string what;
  if (kind == "log") {
    what = who + "log: " + sanitize_line(event.line());
  } else if (kind == "step_started" || kind == "step_succeeded") {
    what = fmt::format("{}{} (attempt {})", who, kind, step.attempts());
  } else if (kind == "step_retrying" || kind == "step_failed") {
    what = fmt::format("{}{} (attempt {}){}", who, kind, step.attempts(), error);
  } else if (kind == "step_interrupted") {
    what = fmt::format("{}{} (now attempt {}){}", who, kind, step.attempts(), error);
  } else if (kind == "health_gate_waiting") {
    what = who +
           (step.waiting_for().empty() ? kind : "waiting for " + sanitize_line(step.waiting_for()));
  } else if (kind == "step_progress") {
    what = who + (step.detail().empty() ? "progress" : sanitize_line(step.detail())) +
           (step.url().empty() ? "" : " (" + sanitize_line(step.url()) + ")");
  } else if (kind == "phase_done" || kind == "phase_passed") {
    what = fmt::format("{}{} (phase {})", who, kind, step.phase());
  } else if (kind == "rollback_failed") {
    what = who + "not rolled back" +
           (step.rollback_error().empty() ? "" : ": " + sanitize_line(step.rollback_error()));
  } else if (kind == "finished") {
    what = "finished: " + state_name(event.state());
  } else if (kind == "accepted") {
    std::vector<std::string> waves;
    for (const auto& wave : waves_of(event.waves())) waves.push_back(join(wave, ", "));
    what = "accepted" + (waves.empty() ? "" : ": " + join(waves, " | "));
  } else {
    // step_skipped, health_gate_passed, rolled_back, cancelled, resumed, and kinds added later.
    what = who + kind + error;
  }
  return when + " " + what;
}

std::string format_deploy_summary(const std::string& env, const v1::DeploySummary& summary,
                                  TimePoint now) {
  std::vector<std::string> parts;
  if (!summary.deploy_id().empty()) parts.push_back(summary.deploy_id());
  if (!summary.ref().empty()) parts.push_back("ref " + short_ref(summary.ref()));
  if (is_set(summary.finished_at())) parts.push_back(format_age(summary.finished_at(), now));
  std::string out = fmt::format("{}: {}", env, state_name(summary.state()));
  if (!parts.empty()) out += " (" + join(parts, ", ") + ")";
  return out;
}

std::string format_deploy_summaries(
    const google::protobuf::Map<std::string, v1::DeploySummary>& deploys, TimePoint now) {
  // protobuf maps have no stable order; operators compare rows by eye.
  std::vector<std::string> envs;
  for (const auto& [env, summary] : deploys) envs.push_back(env);
  std::sort(envs.begin(), envs.end());
  std::vector<std::string> parts;
  for (const auto& env : envs) parts.push_back(format_deploy_summary(env, deploys.at(env), now));
  return join(parts, "; ");
}

std::string step_detail(const v1::DeployStep& step, bool with_error) {
  std::vector<std::string> parts;
  if (step.state() == DeployStep::running && step.phase() > step.phases_passed()) {
    parts.push_back("phase " + std::to_string(step.phase()) + " out");
  }
  if (step.state() == DeployStep::running && !step.waiting_for().empty()) {
    parts.push_back("waiting for " + sanitize_line(step.waiting_for()));
  }
  if (step.state() == DeployStep::running && !step.detail().empty()) {
    parts.push_back(sanitize_line(step.detail()));
  }
  if (with_error && !step.error().empty()) parts.push_back(sanitize_line(step.error()));
  if (!step.rollback_error().empty()) {
    parts.push_back("not rolled back: " + sanitize_line(step.rollback_error()));
  }
  return join(parts, "; ");
}

std::string render_deploy_record(const DeployRecord& record, TimePoint now) {
  std::string out = fmt::format("deploy {} to {} ({}): {}\n", record.deploy_id(), record.env(),
                                ref_text(record.ref()), state_name(record.state()));
  std::vector<std::string> facts;
  if (is_set(record.created_at()))
    facts.push_back("created " + format_age(record.created_at(), now));
  if (is_set(record.finished_at())) {
    std::string took;
    if (is_set(record.started_at()) || is_set(record.created_at())) {
      const auto& start = is_set(record.started_at()) ? record.started_at() : record.created_at();
      took = " (took " +
             format_duration(
                 seconds_between(from_timestamp(start), from_timestamp(record.finished_at()))) +
             ")";
    }
    facts.push_back("finished " + format_age(record.finished_at(), now) + took);
  }
  if (!record.on_failure().empty()) facts.push_back("on failure: " + record.on_failure());
  if (!record.owner().empty()) facts.push_back("owner: " + record.owner());
  if (!facts.empty()) out += join(facts, ", ") + "\n";
  if (!record.reason().empty()) out += "reason: " + sanitize_line(record.reason()) + "\n";
  if (record.cancel_requested()) {
    out += "cancel requested" +
           (record.cancel_reason().empty() ? "" : ": " + sanitize_line(record.cancel_reason())) +
           "\n";
  }
  if (!record.error().empty()) out += "error: " + sanitize_line(record.error()) + "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& step : record.steps()) {
    const std::string detail = step_detail(step);
    rows.push_back({std::to_string(step.wave() + 1), step.repo(), state_name(step.state()),
                    std::to_string(step.attempts()), step_took(step, now),
                    is_set(step.healthy_at()) ? "yes" : "-", detail.empty() ? "-" : detail});
  }
  out +=
      "\n" + render_table({"WAVE", "REPO", "STATE", "ATTEMPTS", "TOOK", "HEALTHY", "DETAIL"}, rows);
  // The providers' links (an Actions run, a dashboard), one per line: too long for the table.
  std::string links;
  for (const auto& step : record.steps()) {
    if (!step.url().empty()) links += "  " + step.repo() + ": " + sanitize_line(step.url()) + "\n";
  }
  if (!links.empty()) out += "\nlinks:\n" + links;
  return out;
}

std::string render_deploy_list(const v1::DeployList& list, TimePoint now) {
  if (list.deploys().empty()) return "no deploys\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& record : list.deploys()) {
    std::vector<std::string> repos;
    for (const auto& step : record.steps()) repos.push_back(step.repo());
    // A list carries each deploy's first steps only: say how many more there are.
    std::string more;
    if (record.total_steps() > record.steps_size()) {
      more = fmt::format(" +{} more", record.total_steps() - record.steps_size());
    }
    rows.push_back({record.deploy_id(), record.env(), state_name(record.state()),
                    truncate_columns(join(repos, ","), 40 - more.size()) + more,
                    format_age(record.created_at(), now)});
  }
  return render_table({"ID", "ENV", "STATE", "REPOS", "CREATED"}, rows);
}

// ---------------------------------------------------------------------------------------------
// DeployProgress

void DeployProgress::set_plan(const Waves& waves, const std::string& env, const std::string& ref) {
  if (!env.empty()) env_ = env;
  if (!ref.empty()) ref_ = ref;
  for (std::size_t w = 0; w < waves.size(); ++w) {
    for (const auto& repo : waves[w]) {
      auto& r = row(repo);
      r.wave = static_cast<int>(w);
      if (r.step.repo().empty()) r.step.set_repo(repo);
    }
  }
  std::stable_sort(rows_.begin(), rows_.end(),
                   [](const Row& a, const Row& b) { return a.wave < b.wave; });
}

DeployProgress::Row& DeployProgress::row(const std::string& repo) {
  for (auto& r : rows_) {
    if (r.repo == repo) return r;
  }
  Row r;
  r.repo = repo;
  r.step.set_repo(repo);
  rows_.push_back(std::move(r));
  return rows_.back();
}

bool DeployProgress::merge_step(Row& row, const DeployStep& step) {
  const auto& current = row.step;
  if (step.attempts() < current.attempts()) return false;
  bool forward = step.attempts() > current.attempts() || rank(step.state()) > rank(current.state());
  if (!forward && rank(step.state()) < rank(current.state())) return false;
  // Same attempt and state: still take the newer details, but keep what only the other copy knew.
  DeployStep merged = step;
  if (!forward) {
    if (!is_set(merged.healthy_at()) && is_set(current.healthy_at())) {
      *merged.mutable_healthy_at() = current.healthy_at();
    }
    if (merged.error().empty()) merged.set_error(current.error());
    if (merged.rollback_error().empty()) merged.set_rollback_error(current.rollback_error());
  }
  row.step = std::move(merged);
  return forward;
}

void DeployProgress::merge_state(DeployRecord::State state) {
  if (rank(state) > rank(state_)) state_ = state;
}

std::vector<std::string> DeployProgress::apply(const DeployRecord& record) {
  if (!record.env().empty()) env_ = record.env();
  if (!record.ref().empty()) ref_ = record.ref();
  if (is_set(record.started_at())) started_ = from_timestamp(record.started_at());
  if (is_set(record.finished_at())) finished_at_ = from_timestamp(record.finished_at());
  if (!record.error().empty()) error_ = record.error();
  std::vector<std::string> moved;
  for (const auto& step : record.steps()) {
    bool known = std::any_of(rows_.begin(), rows_.end(),
                             [&](const Row& r) { return r.repo == step.repo(); });
    auto& r = row(step.repo());
    if (!known) r.wave = step.wave();
    if (merge_step(r, step)) moved.push_back(step.repo());
  }
  std::stable_sort(rows_.begin(), rows_.end(),
                   [](const Row& a, const Row& b) { return a.wave < b.wave; });
  merge_state(record.state());
  if (is_terminal(state_)) finished_ = true;
  return moved;
}

void DeployProgress::apply(const v1::DeployEvent& event) {
  if (!event.env().empty()) env_ = event.env();
  if (!event.ref().empty()) ref_ = event.ref();
  const std::string& kind = event.kind();
  if (kind == "accepted" && rows_.empty()) set_plan(waves_of(event.waves()), {}, {});
  if (!started_ && is_set(event.at()) && kind != "accepted") started_ = from_timestamp(event.at());
  if (!event.step().repo().empty()) {
    bool known = std::any_of(rows_.begin(), rows_.end(),
                             [&](const Row& r) { return r.repo == event.step().repo(); });
    auto& r = row(event.step().repo());
    if (!known) r.wave = event.step().wave();
    merge_step(r, event.step());
    if (kind == "log") r.last_line = sanitize_line(event.line());
  }
  if (kind == "finished") {
    // The final word, even when an earlier snapshot ranked higher.
    if (is_terminal(event.state())) state_ = event.state();
    finished_ = true;
    if (is_set(event.at())) finished_at_ = from_timestamp(event.at());
  } else {
    merge_state(event.state());
  }
}

std::vector<std::string> DeployProgress::render(TimePoint now, std::size_t columns) const {
  // Writing into a terminal's last column makes some terminals wrap early, which would break the
  // line count the redraw moves the cursor up by.
  std::size_t width = columns > 1 ? columns - 1 : 1;
  std::vector<std::string> lines;
  std::string elapsed;
  if (started_)
    elapsed = "  " + format_duration(seconds_between(*started_, finished_at_.value_or(now)));
  lines.push_back(truncate_columns(fmt::format("deploy {} to {} ({}): {}{}", deploy_id_, env_,
                                               ref_text(ref_), state_name(state_), elapsed),
                                   width));
  std::size_t repo_width = 4;
  for (const auto& r : rows_) repo_width = std::max(repo_width, r.repo.size());
  for (const auto& r : rows_) {
    const auto& step = r.step;
    std::string attempts = step.attempts() > 0 ? fmt::format("#{}", step.attempts()) : "";
    std::string healthy = is_set(step.healthy_at()) ? "healthy" : "";
    std::string detail = step.state() == DeployStep::failed && !step.error().empty()
                             ? "error: " + sanitize_line(step.error())
                         : step.state() == DeployStep::cancelled && !step.error().empty()
                             ? sanitize_line(step.error())
                             : step_detail(step, /*with_error=*/false);
    if (detail.empty()) detail = r.last_line;
    std::string took = is_set(step.started_at()) ? step_took(step, now) : "";
    lines.push_back(truncate_columns(
        fmt::format("  {} {:<{}}  {:<11} {:<7}  {:<4} {:>6}  {}", r.wave + 1, r.repo, repo_width,
                    state_name(step.state()), healthy, attempts, took, detail),
        width));
  }
  for (auto& line : lines) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
  }
  return lines;
}

std::string ansi_redraw(const std::vector<std::string>& lines, std::size_t previous_lines) {
  std::string out;
  // "ESC[0A" moves up one line on many terminals, so a first draw must not emit it.
  if (previous_lines > 0) out += fmt::format("\x1b[{}A", previous_lines);
  for (const auto& line : lines) out += "\r\x1b[2K" + line + "\n";
  out += "\x1b[J";  // a shorter redraw leaves no stale lines below
  return out;
}

}  // namespace orgd::cli
