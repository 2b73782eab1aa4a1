#include "plugins/exec/exec_provider.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "daemon/core/logging.hpp"
#include "daemon/core/unique_fd.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace orgd {

namespace {

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
    if (dropped_ > 0 && sink_) sink_("… " + std::to_string(dropped_) + " lines dropped");
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

// Runs `/bin/sh -c command` in workdir to completion (or timeout).
DeployProgress run_command(const std::string& command, const ExecDeployTarget::Settings& settings,
                           const DeployContext& context, const LogSink& log) {
  const auto logger = logging::get("plugin.exec");
  DeployProgress result{DeployStatus::failed, context.deploy_id, {}};

  // Everything the child needs is prepared before fork(): after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  const std::pair<const char*, const std::string*> ours[] = {{"ORGD_REPO", &context.repo},
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
  const std::string chdir_failed = "cannot change to the working directory " + settings.workdir + "\n";

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.error = std::string{"cannot create a pipe: "} + std::strerror(errno);
    return result;
  }
  UniqueFd read_end{above_stdio(fds[0])};
  UniqueFd write_end{above_stdio(fds[1])};
  UniqueFd null_in{above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC))};
  if (read_end.get() < 0 || write_end.get() < 0 || null_in.get() < 0) {
    result.error = std::string{"cannot prepare the child's descriptors: "} + std::strerror(errno);
    return result;
  }

  const pid_t pid = ::fork();
  if (pid < 0) {
    result.error = std::string{"cannot fork: "} + std::strerror(errno);
    return result;
  }
  if (pid == 0) {
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
  logger->info("{} {}/{}: running {} in {}", context.deploy_id, context.repo, context.env,
               command, settings.workdir);

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
  } else if (WIFEXITED(status)) {
    result.error = "exit code " + std::to_string(WEXITSTATUS(status));
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
  return result;
}

}  // namespace

Result<DeployProgress> ExecDeployTarget::start(const DeployContext& context, const LogSink& log) {
  DeployProgress result = run_command(settings_.command, settings_, context, log);
  std::lock_guard lock{results_mutex_};
  if (results_.count(result.handle) == 0) {
    results_order_.push_back(result.handle);
    if (results_order_.size() > kMaxResults) {
      results_.erase(results_order_.front());
      results_order_.pop_front();
    }
  }
  results_[result.handle] = result;
  return result;
}

Result<DeployProgress> ExecDeployTarget::poll(const DeployContext& /*context*/,
                                              const std::string& handle) {
  std::lock_guard lock{results_mutex_};
  const auto it = results_.find(handle);
  if (it == results_.end()) return not_found("exec provider: no result for deploy " + handle);
  return it->second;
}

Result<DeployProgress> ExecDeployTarget::rollback(const DeployContext& context,
                                                  const LogSink& log) {
  if (!settings_.rollback_command) {
    return invalid_argument("exec provider: this target has no rollback_command");
  }
  return run_command(*settings_.rollback_command, settings_, context, log);
}

std::unique_ptr<DeployTarget> ExecProvider::make_deploy_target(const DeployTargetConfig& target,
                                                               const std::string& source_file) {
  SettingsReader reader{target.settings, source_file, target.line, "deploy." + target.env};
  ExecDeployTarget::Settings settings;
  settings.command = reader.required_string("command");
  settings.workdir = reader.string("workdir").value_or(settings.workdir);
  settings.timeout = reader.duration("timeout", settings.timeout);
  settings.rollback_command = reader.string("rollback_command");
  reader.finish();
  return std::make_unique<ExecDeployTarget>(std::move(settings));
}

std::unique_ptr<Provider> make_exec_provider(const ProviderConfig& config,
                                             const ProviderEnvironment& /*env*/,
                                             const std::string& source_file) {
  SettingsReader reader{config.settings, source_file, config.line, "providers." + config.name};
  reader.finish();
  return std::make_unique<ExecProvider>(config.name);
}

}  // namespace orgd
