#include "daemon/core/subprocess.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

namespace orgd {
namespace {

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

std::string errno_text(int err) { return std::error_code(err, std::system_category()).message(); }

// What the child reports through the close-on-exec pipe when it cannot get to execve().
enum class Stage : int { setup = 1, workdir = 2, exec = 3 };
struct ChildReport {
  Stage stage;
  int error;
};

[[noreturn]] void child_fail(int report_fd, Stage stage, int err) {
  const ChildReport report{stage, err};
  [[maybe_unused]] const ssize_t n = ::write(report_fd, &report, sizeof report);
  ::_exit(127);
}

struct ChildFds {
  int null_in, out, err, report;
};

// The child side of fork(): async-signal-safe calls only (the parent has threads: nats.c, asio),
// so everything it uses was prepared before fork().
[[noreturn]] void exec_child(const SpawnOptions& options, const std::string& binary,
                             char* const* argv, char* const* envp, pid_t parent, ChildFds fds) {
  // Default dispositions and an empty mask: the parent blocked every signal around fork(), and
  // ignored signals would stay ignored across execve().
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (options.new_process_group) ::setpgid(0, 0);
  if (options.parent_death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, options.parent_death_signal) != 0) {
      child_fail(fds.report, Stage::setup, errno);
    }
    // The parent died before the request took effect: the child has been re-parented already.
    if (::getppid() != parent) ::_exit(127);
  }
  if (!options.workdir.empty() && ::chdir(options.workdir.c_str()) != 0) {
    child_fail(fds.report, Stage::workdir, errno);
  }
  if (::dup2(fds.null_in, STDIN_FILENO) < 0 || ::dup2(fds.out, STDOUT_FILENO) < 0 ||
      ::dup2(fds.err, STDERR_FILENO) < 0) {
    child_fail(fds.report, Stage::setup, errno);
  }
  // Nothing else of the parent's leaks into the child (sockets, the vault's files), close-on-exec
  // or not; the report pipe is close-on-exec and tells the parent whether execve() worked.
  const auto keep = static_cast<unsigned>(fds.report);
  if ((keep > 3 && ::syscall(SYS_close_range, 3U, keep - 1, 0U) != 0) ||
      ::syscall(SYS_close_range, keep + 1, ~0U, 0U) != 0) {
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != fds.report) ::close(fd);
    }
  }
  ::execve(binary.c_str(), argv, envp);
  child_fail(fds.report, Stage::exec, errno);
}

}  // namespace

std::map<std::string, std::string> child_environment(const Environment& from,
                                                     const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  for (const auto* names : {&kChildEnvironmentAllowList, &extra}) {
    for (const auto& name : *names) {
      if (auto value = from.get(name)) env[name] = std::move(*value);
    }
  }
  return env;
}

std::optional<std::string> find_executable(const std::string& name, const std::string& path) {
  if (name.empty()) return std::nullopt;
  if (name.find('/') != std::string::npos) return name;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    start = end + 1;
    const std::string candidate = (dir.empty() ? std::string{"."} : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return std::nullopt;
}

SpawnedChild spawn_child(const SpawnOptions& options) {
  if (options.argv.empty()) throw SpawnError("cannot start a process: empty argv");
  const auto path_it = options.env.find("PATH");
  const auto binary = find_executable(
      options.argv[0], path_it != options.env.end() ? path_it->second : kDefaultPath);
  if (!binary) throw SpawnError("'" + options.argv[0] + "' not found on PATH");

  // Everything the child needs is built before fork().
  std::vector<std::string> args = options.argv;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_entries;
  for (const auto& [name, value] : options.env) env_entries.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_entries) envp.push_back(e.data());
  // Secret variables: one sodium buffer of "NAME=value\0" strings, freed (zeroed) on return.
  std::size_t secret_bytes = 0;
  for (const auto& [name, value] : options.secret_env) {
    if (options.env.count(name) != 0) {
      throw SpawnError("cannot start '" + options.argv[0] + "': " + name + " is set twice");
    }
    secret_bytes += name.size() + 1 + value->size() + 1;
  }
  std::unique_ptr<char, void (*)(void*)> secret_block{nullptr, sodium_free};
  if (secret_bytes > 0) {
    if (sodium_init() < 0) throw SpawnError("libsodium could not be initialised");
    secret_block.reset(static_cast<char*>(sodium_malloc(secret_bytes)));
    if (!secret_block) throw SpawnError("cannot allocate the child's environment");
    char* at = secret_block.get();
    for (const auto& [name, value] : options.secret_env) {
      envp.push_back(at);
      std::memcpy(at, name.data(), name.size());
      at += name.size();
      *at++ = '=';
      const std::string_view bytes = value->expose();
      if (!bytes.empty()) std::memcpy(at, bytes.data(), bytes.size());
      at += bytes.size();
      *at++ = '\0';
    }
  }
  envp.push_back(nullptr);

  UniqueFd null_fd{above_stdio(::open("/dev/null", O_RDWR | O_CLOEXEC))};
  if (null_fd.get() < 0) throw SpawnError("cannot open /dev/null: " + errno_text(errno));
  UniqueFd output_read, output_write;
  if (options.capture_output) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw SpawnError("cannot create a pipe: " + errno_text(errno));
    output_read = UniqueFd{above_stdio(fds[0])};
    output_write = UniqueFd{above_stdio(fds[1])};
  }
  int report_fds[2];
  if (::pipe2(report_fds, O_CLOEXEC) != 0) {
    throw SpawnError("cannot create a pipe: " + errno_text(errno));
  }
  UniqueFd report_read{above_stdio(report_fds[0])};
  UniqueFd report_write{above_stdio(report_fds[1])};
  if (report_read.get() < 0 || report_write.get() < 0 ||
      (options.capture_output && (output_read.get() < 0 || output_write.get() < 0))) {
    throw SpawnError("cannot prepare the child's descriptors: " + errno_text(errno));
  }
  auto or_null = [&](int fd) { return fd >= 0 ? fd : null_fd.get(); };
  const ChildFds fds{
      null_fd.get(), options.capture_output ? output_write.get() : or_null(options.stdout_fd),
      options.capture_output ? output_write.get() : or_null(options.stderr_fd), report_write.get()};

  // Signals stay blocked in the forking thread until the child has reset its dispositions, so no
  // handler of the parent's ever runs in the child.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) exec_child(options, *binary, argv.data(), envp.data(), parent, fds);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (child < 0) throw SpawnError("cannot fork: " + errno_text(fork_errno));
  // Also from here: whichever runs first, the group exists before anyone signals it.
  if (options.new_process_group) ::setpgid(child, child);
  report_write.reset();
  output_write.reset();

  // EOF: execve() succeeded (the pipe is close-on-exec); a report: why it did not.
  ChildReport report{};
  ssize_t n;
  do {
    n = ::read(report_read.get(), &report, sizeof report);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    reap_child(child, /*block=*/true);
    switch (report.stage) {
      case Stage::workdir:
        throw SpawnError("cannot change to the working directory " + options.workdir + ": " +
                         errno_text(report.error));
      case Stage::exec:
        throw SpawnError("cannot execute '" + *binary + "': " + errno_text(report.error));
      case Stage::setup:
        break;
    }
    throw SpawnError("cannot prepare '" + *binary + "': " + errno_text(report.error));
  }
  return SpawnedChild{child, std::move(output_read)};
}

std::optional<int> reap_child(pid_t pid, bool block) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, block ? 0 : WNOHANG);
    if (r == pid) return status;
    if (r == 0) return std::nullopt;
    if (errno == EINTR) continue;
    return 0;  // ECHILD: reaped elsewhere (SIGCHLD ignored, a waitpid(-1)); gone either way
  }
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) +
           ")";
  }
  return "wait status " + std::to_string(status);
}

}  // namespace orgd
