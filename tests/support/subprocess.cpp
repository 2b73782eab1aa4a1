#include "tests/support/subprocess.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

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

std::string resolve(const std::string& name, const std::string& path_env) {
  if (name.find('/') != std::string::npos) return name;
  std::size_t start = 0;
  while (start <= path_env.size()) {
    auto end = path_env.find(':', start);
    if (end == std::string::npos) end = path_env.size();
    std::string dir = path_env.substr(start, end - start);
    start = end + 1;
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
  }
  throw std::runtime_error("Subprocess: '" + name + "' not found on PATH");
}

[[noreturn]] void child_fail(int report_fd, int err) {
  ssize_t ignored = ::write(report_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
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

  // Everything the child needs is built before fork(): between fork() and execve() the child of
  // a multi-threaded process (nats.c runs threads) may only make async-signal-safe calls.
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& name : options.unset_env) env.erase(name);
  for (const auto& [name, value] : options.env) env[name] = value;
  const auto path_it = env.find("PATH");
  const std::string binary =
      resolve(argv_[0], path_it != env.end() ? path_it->second : "/usr/local/bin:/usr/bin:/bin");

  std::vector<std::string> env_entries;
  for (const auto& [name, value] : env) env_entries.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_entries) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv_;
  std::vector<char*> argvp;
  for (auto& a : args) argvp.push_back(a.data());
  argvp.push_back(nullptr);
  const std::string cwd = options.cwd.string();

  UniqueFd null_fd(above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  if (null_fd.get() < 0) throw std::runtime_error("Subprocess: /dev/null: " + errno_text(errno));
  UniqueFd out_fd(open_output(stdout_path_, options.append_output));
  UniqueFd separate_err_fd(
      stderr_path_ == stdout_path_ ? -1 : open_output(stderr_path_, options.append_output));
  const int err_fd = separate_err_fd.get() >= 0 ? separate_err_fd.get() : out_fd.get();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error("Subprocess: pipe: " + errno_text(errno));
  }
  UniqueFd report_read(above_stdio(pipe_fds[0]));
  UniqueFd report_write(above_stdio(pipe_fds[1]));
  const bool die_with_parent = options.die_with_parent;

  // Signals stay blocked in this thread until the child has reset its dispositions, so no
  // handler of the test process ever runs in the child.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    const int report = report_write.get();
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(report, errno);
      if (::getppid() != parent) ::_exit(127);
    }
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) child_fail(report, errno);
    if (::dup2(null_fd.get(), STDIN_FILENO) < 0 || ::dup2(out_fd.get(), STDOUT_FILENO) < 0 ||
        ::dup2(err_fd, STDERR_FILENO) < 0) {
      child_fail(report, errno);
    }
    // No descriptor of the test process leaks into the child, close-on-exec or not; the error
    // pipe is close-on-exec and reports a failed execve().
    const auto keep = static_cast<unsigned>(report);
    if (::syscall(SYS_close_range, 3U, keep - 1, 0U) != 0 ||
        ::syscall(SYS_close_range, keep + 1, ~0U, 0U) != 0) {
      for (int fd = 3; fd < 1024; ++fd) {
        if (fd != report) ::close(fd);
      }
    }
    ::execve(binary.c_str(), argvp.data(), envp.data());
    child_fail(report, errno);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  report_write.reset();
  if (child < 0) throw std::runtime_error("Subprocess: fork: " + errno_text(fork_errno));

  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(report_read.get(), &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  pid_ = child;
  if (n > 0) {
    std::lock_guard lock(mutex_);
    poll_locked(/*block=*/true);
    throw std::runtime_error("Subprocess: cannot execute '" + binary +
                             "': " + errno_text(exec_errno));
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
