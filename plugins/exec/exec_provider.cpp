#include "plugins/exec/exec_provider.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <sodium.h>
#include <unistd.h>

#include <cctype>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "daemon/core/logging.hpp"
#include "daemon/core/state_files.hpp"
#include "daemon/core/subprocess.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/core/unique_fd.hpp"
#include "plugins/exec/output_scrubber.hpp"

namespace orgd {

namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
constexpr auto kKillGrace = std::chrono::seconds{5};
// How long output is still read after the command exits (a background child may hold the pipe).
constexpr auto kDrainGrace = std::chrono::seconds{1};

// Splits output into lines for the sink: at most kMaxLines lines of at most kMaxLineBytes each;
// later lines are only counted, and reported in one final line. Each line is scrubbed of the
// command's secrets before anything else sees it (the sink, the failure's last line).
class LineLimiter {
 public:
  LineLimiter(const LogSink& sink, const OutputScrubber& scrubber)
      : sink_(sink),
        scrubber_(scrubber),
        // A few bytes past the limit are kept, so a cut can tell whether the character at the
        // limit is complete; and the longest secret more, so one that starts before the cut is
        // still whole when the line is scrubbed.
        kept_bytes_(ExecDeployTarget::kMaxLineBytes + 4 + scrubber.longest()) {
    // Reserved once: a growing string would leave unwiped copies of what it held.
    partial_.reserve(kept_bytes_);
  }
  ~LineLimiter() { wipe(partial_); }

  void feed(const char* data, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) {
      if (data[i] == '\n') {
        end_line();
      } else if (partial_.size() < kept_bytes_) {
        partial_.push_back(data[i]);
      }
      has_partial_ = data[i] != '\n';
    }
  }

  void finish() {
    if (has_partial_) end_line();
    if (dropped_ > 0 && sink_) {
      sink_("… output truncated: " + std::to_string(dropped_) + " more lines dropped");
    }
  }

  // The last line that was not blank, dropped or not: what a failure's error ends with.
  const std::string& last_line() const { return last_; }

 private:
  // The raw line may hold a secret: zeroed before its memory is reused or released.
  static void wipe(std::string& s) {
    if (s.capacity() > 0) sodium_memzero(s.data(), s.capacity());
    s.clear();
  }

  // Cuts a line to `max` bytes without ending inside a UTF-8 sequence; true if it was cut.
  static bool cut_utf8(std::string& line, std::size_t max) {
    if (line.size() <= max) return false;
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    line.resize(cut);
    return true;
  }

  void remember_last(const std::string& scrubbed) {
    std::string line;
    for (const char c : scrubbed) {
      // Control characters (a progress bar's \r, colours) would garble the one-line error.
      line.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7F ? ' ' : c);
    }
    const auto first = line.find_first_not_of(' ');
    if (first == std::string::npos) return;
    line.erase(0, first);
    line.erase(line.find_last_not_of(' ') + 1);
    if (cut_utf8(line, ExecDeployTarget::kMaxErrorLine)) line += "…";
    last_ = std::move(line);
  }

  void end_line() {
    has_partial_ = false;
    std::string line = scrubber_.scrub(partial_);
    wipe(partial_);
    remember_last(line);
    if (emitted_ >= ExecDeployTarget::kMaxLines) {
      ++dropped_;
    } else {
      cut_utf8(line, ExecDeployTarget::kMaxLineBytes);
      if (sink_) sink_(line);
      ++emitted_;
    }
  }

  const LogSink& sink_;
  const OutputScrubber& scrubber_;
  const std::size_t kept_bytes_;
  std::string partial_;
  bool has_partial_ = false;
  std::size_t emitted_ = 0;
  std::size_t dropped_ = 0;
  std::string last_;
};

std::string describe(Duration d) { return format_duration(d); }

struct CommandOutcome {
  DeployProgress progress;
  std::optional<int> exit_code;  // none after a timeout, a signal or a failure to start
};

// The deploy variables every command gets; an `env:` setting cannot name them.
constexpr const char* kDeployVariables[] = {"ORGD_REPO", "ORGD_ENV", "ORGD_REF", "ORGD_DEPLOY_ID"};

bool is_deploy_variable(const std::string& name) {
  for (const char* ours : kDeployVariables) {
    if (name == ours) return true;
  }
  return false;
}

bool valid_variable_name(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (const char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// Why a repo secret cannot be put in the command's environment ("" when it can): a name that is
// not a variable name, or one the command already gets (a deploy variable, the allow-list, a
// name under `env:`). Refused rather than one silently winning: the command would run with a
// value nobody meant it to have.
std::string check_secret_name(const std::string& name, const ExecDeployTarget::Settings& settings) {
  if (!valid_variable_name(name)) {
    return "secret " + name + " cannot be an environment variable (letters, digits and _ only)";
  }
  if (is_deploy_variable(name)) {
    return "secret " + name + " has the name of a variable orgd sets for each deploy";
  }
  const auto& allowed = kChildEnvironmentAllowList;
  if (std::find(allowed.begin(), allowed.end(), name) != allowed.end() ||
      settings.environment.count(name) != 0) {
    return "secret " + name + " has the name of a variable the target passes from orgd's " +
           "environment (PATH, HOME, LANG, TZ or a name under env:)";
  }
  return {};
}

// Runs `/bin/sh -c command` in workdir to completion (or timeout), passing output to `log` as it
// arrives.
CommandOutcome run_command(const std::string& command, const ExecDeployTarget::Settings& settings,
                           const DeployContext& context, const LogSink& log) {
  const auto logger = logging::get("plugin.exec");
  CommandOutcome outcome{{DeployStatus::failed, context.deploy_id, {}}, std::nullopt};
  DeployProgress& result = outcome.progress;

  // Only what the settings hold (the allow-list and the target's `env:`) and the deploy
  // variables: orgd's own credentials never reach the command.
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", command};
  options.env = settings.environment;
  const std::string* values[] = {&context.repo, &context.env, &context.ref, &context.deploy_id};
  for (std::size_t i = 0; i < std::size(kDeployVariables); ++i) {
    options.env[kDeployVariables[i]] = *values[i];
  }
  // The repo's secrets from the vault, in Secret memory until spawn_child() copies them into the
  // child's environment; kept here only to scrub the output.
  std::vector<NamedSecret> secrets;
  if (settings.repo_secrets) {
    auto resolved = settings.repo_secrets->secrets_for(context.repo);
    if (!resolved) {
      result.error = "the secrets of " + context.repo + " are unavailable: " +
                     resolved.error().message;
      logger->warn("{} {}/{}: {}", context.deploy_id, context.repo, context.env, result.error);
      return outcome;
    }
    secrets = std::move(resolved).value();
    for (const auto& secret : secrets) {
      if (auto refused = check_secret_name(secret.name, settings); !refused.empty()) {
        result.error = refused;
        logger->warn("{} {}/{}: {}", context.deploy_id, context.repo, context.env, result.error);
        return outcome;
      }
      options.secret_env.emplace_back(secret.name, &secret.value);
    }
  }
  std::vector<const Secret*> secret_values;
  for (const auto& secret : secrets) secret_values.push_back(&secret.value);
  const OutputScrubber scrubber{secret_values};
  options.workdir = settings.workdir;
  options.capture_output = true;
  // Its own process group, so a timeout reaches the whole tree. SIGKILL when orgd dies, so a
  // resumed deploy never runs beside this one.
  options.new_process_group = true;
  options.parent_death_signal = SIGKILL;
  SpawnedChild child;
  try {
    child = spawn_child(options);
  } catch (const SpawnError& e) {
    result.error = e.what();
    logger->warn("{} {}/{}: {}", context.deploy_id, context.repo, context.env, result.error);
    return outcome;
  }
  const pid_t pid = child.pid;
  UniqueFd read_end = std::move(child.output);
  ::fcntl(read_end.get(), F_SETFL, O_NONBLOCK);
  logger->info("{} {}/{}: running {} in {}", context.deploy_id, context.repo, context.env, command,
               settings.workdir);

  LineLimiter lines{log, scrubber};
  const auto started = SteadyClock::now();
  const auto deadline = started + settings.timeout;
  std::optional<SteadyClock::time_point> kill_at;
  std::optional<SteadyClock::time_point> drain_until;
  bool timed_out = false;
  bool pipe_open = true;
  int status = 0;
  bool exited = false;
  char buffer[4096];

  while (true) {
    if (!exited) {
      if (const auto done = reap_child(pid, /*block=*/false)) {
        status = *done;
        exited = true;
        drain_until = SteadyClock::now() + kDrainGrace;
      }
    }
    const auto now = SteadyClock::now();
    if (exited && (!pipe_open || now >= *drain_until)) break;
    if (!exited && !timed_out && now >= deadline) {
      timed_out = true;
      ::kill(-pid, SIGTERM);
      kill_at = now + kKillGrace;
    }
    if (!exited && kill_at && now >= *kill_at) {
      ::kill(-pid, SIGKILL);
      kill_at.reset();
    }
    // Wake at least every 20ms to notice the exit; sooner when output arrives.
    pollfd pfd{read_end.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, pipe_open ? 1 : 0, 20);
    if (ready > 0 && pipe_open) {
      while (true) {
        const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
        if (n > 0) {
          lines.feed(buffer, static_cast<std::size_t>(n));
          sodium_memzero(buffer, static_cast<std::size_t>(n));
          continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) pipe_open = false;
        break;
      }
    }
  }
  lines.finish();
  if (timed_out) ::kill(-pid, SIGKILL);  // leftovers of the tree, if any

  const auto took = std::chrono::duration_cast<Duration>(SteadyClock::now() - started);
  if (timed_out) {
    result.error = "timed out after " + describe(settings.timeout);
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    result.status = DeployStatus::succeeded;
    outcome.exit_code = 0;
  } else if (WIFEXITED(status)) {
    result.error = "exit code " + std::to_string(WEXITSTATUS(status));
    outcome.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.error = "killed by signal " + std::to_string(WTERMSIG(status));
  } else {
    result.error = "ended with wait status " + std::to_string(status);
  }
  // "exit code 127" alone leaves the user guessing; the last line usually says why.
  if (result.status != DeployStatus::succeeded && !lines.last_line().empty()) {
    result.error += ": " + lines.last_line();
  }
  if (result.status == DeployStatus::succeeded) {
    logger->info("{}: succeeded in {}", context.deploy_id, describe(took));
  } else {
    logger->warn("{}: failed in {}: {}", context.deploy_id, describe(took), result.error);
  }
  return outcome;
}

std::string result_key(const std::string& deploy_id, int attempt) {
  return deploy_id + "." + std::to_string(attempt);
}

}  // namespace

ExecDeployTarget::ExecDeployTarget(Settings settings, std::string state_dir,
                                   std::shared_ptr<const Clock> clock)
    : settings_(std::move(settings)),
      state_dir_(std::move(state_dir)),
      clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {}

Result<std::string> ExecDeployTarget::state_stem(const DeployContext& context) const {
  for (const auto* part : {&context.repo, &context.env, &context.deploy_id}) {
    if (!safe_path_component(*part)) {
      return permanent(
          invalid_argument("exec provider: unusable repo, env or deploy id '" + *part + "'"));
    }
  }
  return (fs::path{state_dir_} / "exec" / context.repo / context.env /
          result_key(context.deploy_id, context.attempt))
      .string();
}

Result<DeployProgress> ExecDeployTarget::read_result(const DeployContext& context) const {
  if (state_dir_.empty()) return not_found("exec provider: no state directory");
  auto stem = state_stem(context);
  if (!stem) return stem.error();
  const std::string path = stem.value() + ".json";
  std::ifstream in{path, std::ios::binary};
  if (!in) return not_found("exec provider: no result for deploy " + context.deploy_id);
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("status") || !record["status"].is_string()) {
    return internal_error("exec provider: unreadable result " + path);
  }
  const auto status = record["status"].get<std::string>();
  if (status != "succeeded" && status != "failed") {
    return internal_error("exec provider: unknown status '" + status + "' in " + path);
  }
  DeployProgress result{status == "succeeded" ? DeployStatus::succeeded : DeployStatus::failed,
                        context.deploy_id,
                        {}};
  if (record.contains("error") && record["error"].is_string()) {
    result.error = record["error"].get<std::string>();
  }
  return result;
}

void ExecDeployTarget::remember(const std::string& key, const DeployProgress& result) {
  std::lock_guard lock{results_mutex_};
  running_.erase(key);
  if (results_.count(key) == 0) {
    results_order_.push_back(key);
    if (results_order_.size() > kMaxResults) {
      results_.erase(results_order_.front());
      results_order_.pop_front();
    }
  }
  results_[key] = result;
}

Result<DeployProgress> ExecDeployTarget::start(const DeployContext& context, const LogSink& log) {
  std::string stem;
  if (!state_dir_.empty()) {
    auto checked = state_stem(context);
    if (!checked) return checked.error();
    stem = std::move(checked.value());
    // A result left by an earlier run of this attempt must not answer for this one.
    std::error_code ignored;
    fs::remove(stem + ".json", ignored);
    // Without the marker a restarted orgd could not tell "never started" from "died while
    // running", and would run the command again: no marker, no command.
    const nlohmann::json marker = {{"started_at", format_rfc3339(clock_->now())}};
    if (auto written = write_file_atomically(stem + ".started", marker.dump() + "\n"); !written) {
      return written.error();
    }
  }
  const std::string key = result_key(context.deploy_id, context.attempt);
  {
    std::lock_guard lock{results_mutex_};
    running_.insert(key);
  }
  const CommandOutcome outcome = run_command(settings_.command, settings_, context, log);
  if (!stem.empty()) {
    const nlohmann::json record = {
        {"exit_code", outcome.exit_code ? nlohmann::json(*outcome.exit_code) : nlohmann::json()},
        {"status", outcome.progress.status == DeployStatus::succeeded ? "succeeded" : "failed"},
        {"error", outcome.progress.error},
        {"finished_at", format_rfc3339(clock_->now())},
    };
    if (auto written = write_file_atomically(stem + ".json", record.dump(2) + "\n"); !written) {
      // The command has run; its result still goes back to the caller. Only a restart before the
      // caller records it would see "interrupted" and leave the decision to the retry policy.
      logging::get("plugin.exec")
          ->warn("{}: cannot keep the result: {}", context.deploy_id, written.error().message);
    }
  }
  remember(key, outcome.progress);
  return outcome.progress;
}

Result<DeployProgress> ExecDeployTarget::poll(const DeployContext& context) {
  const std::string& handle = context.handle.empty() ? context.deploy_id : context.handle;
  DeployContext of_handle = context;
  of_handle.deploy_id = handle;
  const std::string key = result_key(handle, context.attempt);
  {
    std::lock_guard lock{results_mutex_};
    if (const auto it = results_.find(key); it != results_.end()) return it->second;
    if (running_.count(key) != 0) return DeployProgress{DeployStatus::running, handle, {}};
  }
  auto stored = read_result(of_handle);
  if (!stored && stored.error().code == ErrorCode::not_found) {
    return not_found("exec provider: no result for deploy " + handle);
  }
  return stored;
}

Result<DeployProgress> ExecDeployTarget::recover(const DeployContext& context) {
  DeployContext own = context;
  own.handle = context.deploy_id;
  auto polled = poll(own);
  if (polled || polled.error().code != ErrorCode::not_found || state_dir_.empty()) return polled;
  auto stem = state_stem(context);
  if (!stem) return stem.error();
  std::error_code ec;
  if (fs::exists(stem.value() + ".started", ec)) {
    return DeployProgress{DeployStatus::interrupted, context.deploy_id, kInterrupted};
  }
  return not_found("exec provider: deploy " + context.deploy_id + " attempt " +
                   std::to_string(context.attempt) + " never started");
}

std::optional<Duration> ExecDeployTarget::max_call_duration() const {
  return settings_.timeout + std::chrono::duration_cast<Duration>(kKillGrace + kDrainGrace) +
         std::chrono::seconds{5};
}

Result<DeployProgress> ExecDeployTarget::rollback(const DeployContext& context,
                                                  const LogSink& log) {
  if (!settings_.rollback_command) {
    return permanent(invalid_argument("exec provider: this target has no rollback_command"));
  }
  return run_command(*settings_.rollback_command, settings_, context, log).progress;
}

std::unique_ptr<DeployTarget> ExecProvider::make_deploy_target(const DeployTargetConfig& target,
                                                               const std::string& source_file) {
  SettingsReader reader = target_settings(target, source_file);
  ExecDeployTarget::Settings settings;
  settings.command = reader.required_string("command");
  settings.workdir = reader.string("workdir").value_or(settings.workdir);
  // Checked here, so --check-config finds it, not the first deploy.
  std::error_code ec;
  const auto workdir = fs::status(settings.workdir, ec);
  if (!fs::exists(workdir)) {
    reader.invalid("workdir", "no such directory: " + settings.workdir);
  } else if (!fs::is_directory(workdir)) {
    reader.invalid("workdir", "not a directory: " + settings.workdir);
  } else if (::access(settings.workdir.c_str(), X_OK) != 0) {
    reader.invalid("workdir", "cannot enter " + settings.workdir + ": " + std::strerror(errno));
  }
  settings.timeout = reader.duration("timeout", settings.timeout);
  settings.rollback_command = reader.string("rollback_command");
  // Names, not values: the values are orgd's, taken now, so an unset one fails at load.
  const auto names = reader.string_list("env").value_or(std::vector<std::string>{});
  for (const auto& name : names) {
    if (!valid_variable_name(name)) {
      reader.invalid("env", "'" + name + "' is not a variable name");
    } else if (is_deploy_variable(name)) {
      reader.invalid("env", name + " is set by orgd for each deploy");
    } else if (!environment_.get(name)) {
      reader.invalid("env", name + " is not set in orgd's environment");
    }
  }
  settings.environment = child_environment(environment_, names);
  settings.repo_secrets = repo_secrets_;
  reader.finish();
  return std::make_unique<ExecDeployTarget>(std::move(settings), data_dir_, clock_);
}

std::unique_ptr<Provider> make_exec_provider(const ProviderConfig& config,
                                             const ProviderServices& services,
                                             const std::string& source_file) {
  SettingsReader reader = provider_settings(config, source_file);
  reader.finish();
  // The data dir holds the results that outlive a restart (under exec/, its state dir); without
  // one (tests) there are none.
  return std::make_unique<ExecProvider>(config.name, services.data_dir, services.clock,
                                        services.environment, services.repo_secrets);
}

}  // namespace orgd
