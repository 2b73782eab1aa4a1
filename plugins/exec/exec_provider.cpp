#include "plugins/exec/exec_provider.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "daemon/core/timestamps.hpp"
#include "daemon/core/unique_fd.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace orgd {

namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
constexpr auto kKillGrace = std::chrono::seconds{5};
// How long output is still read after the command exits (a background child may hold the pipe).
constexpr auto kDrainGrace = std::chrono::seconds{1};

// Splits output into lines for the sink: at most kMaxLines lines of at most kMaxLineBytes each;
// later lines are only counted, and reported in one final line.
class LineLimiter {
 public:
  explicit LineLimiter(const LogSink& sink) : sink_(sink) {}

  void feed(const char* data, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) {
      if (data[i] == '\n') {
        end_line();
      } else if (partial_.size() < ExecDeployTarget::kMaxLineBytes) {
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

 private:
  void end_line() {
    has_partial_ = false;
    if (emitted_ >= ExecDeployTarget::kMaxLines) {
      ++dropped_;
    } else {
      // A cut line must not end inside a UTF-8 sequence.
      if (partial_.size() == ExecDeployTarget::kMaxLineBytes) {
        std::size_t cut = partial_.size();
        while (cut > 0 && (static_cast<unsigned char>(partial_[cut - 1]) & 0xC0) == 0x80) --cut;
        if (cut > 0 && (static_cast<unsigned char>(partial_[cut - 1]) & 0xC0) == 0xC0) --cut;
        partial_.resize(cut);
      }
      if (sink_) sink_(partial_);
      ++emitted_;
    }
    partial_.clear();
  }

  const LogSink& sink_;
  std::string partial_;
  bool has_partial_ = false;
  std::size_t emitted_ = 0;
  std::size_t dropped_ = 0;
};

std::string describe(Duration d) { return format_duration(d); }

struct CommandOutcome {
  DeployProgress progress;
  std::optional<int> exit_code;  // none after a timeout, a signal or a failure to start
};

// Runs `/bin/sh -c command` in workdir to completion (or timeout), passing output to `log` as it
// arrives.
CommandOutcome run_command(const std::string& command, const ExecDeployTarget::Settings& settings,
                           const DeployContext& context, const LogSink& log) {
  const auto logger = logging::get("plugin.exec");
  CommandOutcome outcome{{DeployStatus::failed, context.deploy_id, {}}, std::nullopt};
  DeployProgress& result = outcome.progress;

  // Everything the child needs is prepared before fork(): after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  const std::pair<const char*, const std::string*> ours[] = {
      {"ORGD_REPO", &context.repo},
      {"ORGD_ENV", &context.env},
      {"ORGD_REF", &context.ref},
      {"ORGD_DEPLOY_ID", &context.deploy_id}};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    bool replaced = false;
    for (const auto& [name, value] : ours) {
      const std::size_t n = std::strlen(name);
      if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') replaced = true;
    }
    if (!replaced) env_strings.emplace_back(*e);
  }
  for (const auto& [name, value] : ours) env_strings.push_back(std::string{name} + "=" + *value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  const std::string chdir_failed =
      "cannot change to the working directory " + settings.workdir + "\n";

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.error = std::string{"cannot create a pipe: "} + std::strerror(errno);
    return outcome;
  }
  UniqueFd read_end{above_stdio(fds[0])};
  UniqueFd write_end{above_stdio(fds[1])};
  UniqueFd null_in{above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC))};
  if (read_end.get() < 0 || write_end.get() < 0 || null_in.get() < 0) {
    result.error = std::string{"cannot prepare the child's descriptors: "} + std::strerror(errno);
    return outcome;
  }

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    result.error = std::string{"cannot fork: "} + std::strerror(errno);
    return outcome;
  }
  if (pid == 0) {
    // Die with orgd, so a resumed deploy never runs beside this one. Should orgd have died before
    // the request took effect, the child has been re-parented already: leave at once.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);  // its own process group, so a timeout reaches the whole tree
    ::dup2(null_in.get(), 0);
    ::dup2(write_end.get(), 1);
    ::dup2(write_end.get(), 2);
    ::close_range(3, ~0U, 0);  // nothing else of ours leaks into the command
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::chdir(settings.workdir.c_str()) != 0) {
      [[maybe_unused]] auto n = ::write(2, chdir_failed.data(), chdir_failed.size());
      ::_exit(127);
    }
    ::execve(argv[0], argv, envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from here: whichever runs first, the group exists before a kill
  write_end.reset();
  ::fcntl(read_end.get(), F_SETFL, O_NONBLOCK);
  logger->info("{} {}/{}: running {} in {}", context.deploy_id, context.repo, context.env, command,
               settings.workdir);

  LineLimiter lines{log};
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
      const pid_t done = ::waitpid(pid, &status, WNOHANG);
      if (done == pid || (done < 0 && errno != EINTR)) {
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
      return invalid_argument("exec provider: unusable repo, env or deploy id '" + *part + "'");
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

Result<DeployProgress> ExecDeployTarget::poll(const DeployContext& context,
                                              const std::string& handle) {
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
  auto polled = poll(context, context.deploy_id);
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
    return invalid_argument("exec provider: this target has no rollback_command");
  }
  return run_command(*settings_.rollback_command, settings_, context, log).progress;
}

std::unique_ptr<DeployTarget> ExecProvider::make_deploy_target(const DeployTargetConfig& target,
                                                               const std::string& source_file) {
  SettingsReader reader = SettingsReader::for_target(target, source_file);
  ExecDeployTarget::Settings settings;
  settings.command = reader.required_string("command");
  settings.workdir = reader.string("workdir").value_or(settings.workdir);
  settings.timeout = reader.duration("timeout", settings.timeout);
  settings.rollback_command = reader.string("rollback_command");
  reader.finish();
  return std::make_unique<ExecDeployTarget>(std::move(settings), data_dir_, clock_);
}

std::unique_ptr<Provider> make_exec_provider(const ProviderConfig& config,
                                             const ProviderEnvironment& env,
                                             const std::string& source_file) {
  SettingsReader reader = SettingsReader::for_provider(config, source_file);
  reader.finish();
  // The data dir holds the results that outlive a restart; without one (tests) there are none.
  return std::make_unique<ExecProvider>(config.name, env.data_dir, env.clock);
}

}  // namespace orgd
