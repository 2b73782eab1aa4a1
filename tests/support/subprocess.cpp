#include "tests/support/subprocess.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "daemon/core/subprocess.hpp"
#include "daemon/core/unique_fd.hpp"

extern char** environ;

namespace orgd::testing {
namespace {

namespace fs = std::filesystem;

std::string errno_text(int err) { return std::error_code(err, std::system_category()).message(); }

int to_status(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return -WTERMSIG(wait_status);
  return -128;
}

int open_output(const fs::path& path, bool append) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  const int fd = above_stdio(::open(path.c_str(), flags, 0644));
  if (fd < 0)
    throw std::runtime_error("Subprocess: cannot open " + path.string() + ": " + errno_text(errno));
  return fd;
}

}  // namespace

std::string describe_exit(int status) {
  if (status >= 0) return "exit code " + std::to_string(status);
  return "signal " + std::to_string(-status) + " (" + strsignal(-status) + ")";
}

std::string last_lines(const std::string& text, std::size_t max_lines) {
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (std::size_t n = 0; n < max_lines && pos > 0; ++n) {
    const auto nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return pos == 0 ? text : text.substr(pos + 1);
}

namespace {
SubprocessOptions with_argv(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  SubprocessOptions options;
  options.argv = std::move(argv);
  options.env = std::move(env);
  return options;
}
}  // namespace

Subprocess::Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env)
    : Subprocess(with_argv(std::move(argv), std::move(env))) {}

Subprocess::Subprocess(SubprocessOptions options) : dir_("orgd-subprocess") {
  if (options.argv.empty()) throw std::invalid_argument("Subprocess: empty argv");
  argv_ = options.argv;
  stdout_path_ = options.stdout_file.empty() ? dir_ / "stdout" : options.stdout_file;
  stderr_path_ = options.stderr_file.empty() ? dir_ / "stderr" : options.stderr_file;

  // The test's environment with the options applied: the child gets exactly this.
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  for (const auto& name : options.unset_env) env.erase(name);
  for (const auto& [name, value] : options.env) env[name] = value;

  UniqueFd out_fd(open_output(stdout_path_, options.append_output));
  UniqueFd separate_err_fd(
      stderr_path_ == stdout_path_ ? -1 : open_output(stderr_path_, options.append_output));
  SpawnOptions spawn;
  spawn.argv = argv_;
  spawn.env = std::move(env);
  spawn.workdir = options.cwd.string();
  spawn.stdout_fd = out_fd.get();
  spawn.stderr_fd = separate_err_fd.get() >= 0 ? separate_err_fd.get() : out_fd.get();
  spawn.parent_death_signal = options.die_with_parent ? SIGKILL : 0;
  try {
    pid_ = spawn_child(spawn).pid;
  } catch (const SpawnError& e) {
    throw std::runtime_error(std::string("Subprocess: ") + e.what());
  }
}

Subprocess::~Subprocess() { kill(); }

void Subprocess::poll_locked(bool block) {
  if (status_ || pid_ <= 0) return;
  int wait_status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &wait_status, block ? 0 : WNOHANG);
    if (r == pid_) {
      status_ = to_status(wait_status);
      return;
    }
    if (r == 0) return;
    if (errno == EINTR) continue;
    // ECHILD: reaped elsewhere (SIGCHLD ignored); the process is gone either way.
    status_ = -128;
    return;
  }
}

bool Subprocess::running() {
  std::lock_guard lock(mutex_);
  poll_locked(false);
  return !status_.has_value();
}

bool Subprocess::signal(int sig) {
  std::lock_guard lock(mutex_);
  poll_locked(false);
  // While unreaped, the pid cannot have been reused: signalling it is safe.
  if (status_) return false;
  return ::kill(pid_, sig) == 0;
}

std::optional<int> Subprocess::wait_for_exit(std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      poll_locked(false);
      if (status_) return status_;
    }
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
}

std::optional<int> Subprocess::exit_status() {
  std::lock_guard lock(mutex_);
  poll_locked(false);
  return status_;
}

void Subprocess::kill() {
  std::lock_guard lock(mutex_);
  poll_locked(false);
  if (status_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  poll_locked(/*block=*/true);
}

std::string Subprocess::stdout_text() const { return read_file(stdout_path_); }
std::string Subprocess::stderr_text() const { return read_file(stderr_path_); }

std::string Subprocess::describe() {
  const auto status = exit_status();
  return argv_[0] + " (pid " + std::to_string(pid_) +
         "): " + (status ? describe_exit(*status) : std::string("running")) +
         "\n--- last lines of stderr ---\n" + last_lines(stderr_text());
}

}  // namespace orgd::testing
