#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace orgd::testing {

// Variables through which a developer's own NATS or orgd settings could leak into an orgd or
// orgctl child: tests unset them (SubprocessOptions::unset_env).
inline const std::vector<std::string> kOutsideEnv = {
    "NATS_URL",          "NATS_URLS",        "NATS_CREDS_FILE",  "NATS_NKEY_FILE",
    "NATS_JWT",          "NATS_NKEY_SEED",   "NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE", "ORGD_HTTP_LISTEN", "ORGD_ORG",         "ORGD_PREFIX"};

struct SubprocessOptions {
  // argv[0] is searched on the child's PATH when it holds no '/'.
  std::vector<std::string> argv;
  // Added to (or replacing) the inherited environment.
  std::map<std::string, std::string> env;
  // Removed from the inherited environment (e.g. NATS_URL, so a test's orgd does not pick up
  // the developer's settings).
  std::vector<std::string> unset_env;
  // Working directory of the child; empty: the test's.
  std::filesystem::path cwd;
  // Where stdout and stderr go; empty: files in the subprocess's own temp dir. Both may name the
  // same file (one descriptor is then shared, lines interleave as written).
  std::filesystem::path stdout_file;
  std::filesystem::path stderr_file;
  // Append to the output files instead of truncating them.
  bool append_output = false;
  // The child gets SIGKILL if the test process dies (PR_SET_PDEATHSIG), so a crashed or timed
  // out test leaves no processes behind. It follows the creating *thread*: create subprocesses
  // from the test's own thread, not from a short-lived helper thread.
  bool die_with_parent = true;
};

// A child process for tests: stdin is /dev/null, stdout and stderr go to files that can be read
// at any time, no descriptor of the test leaks into it, and it is killed and reaped by the
// destructor at the latest (no zombies). Throws std::runtime_error if the binary cannot be
// found or executed.
//
// Exit statuses are ints: the exit code (0..255), or -N when signal N ended the process (the
// Python convention), so EXPECT_EQ(p.wait_for_exit(5s), 0) and EXPECT_EQ(..., -SIGTERM) read
// naturally. describe_exit() turns one into words.
//
// Methods may be called from several threads.
class Subprocess {
 public:
  explicit Subprocess(SubprocessOptions options);
  explicit Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // False once the child has exited (it is reaped then).
  bool running();
  // Sends a signal; false if the child has already exited (never signals a reaped pid).
  bool signal(int sig);
  // Waits up to `deadline` for the child to exit; its status, or nullopt if it still runs.
  std::optional<int> wait_for_exit(std::chrono::milliseconds deadline);
  // The status once the child has been reaped.
  std::optional<int> exit_status();
  // SIGKILL and reap (blocking; a killed process always exits). A no-op after exit.
  void kill();

  std::string stdout_text() const;
  std::string stderr_text() const;
  const std::filesystem::path& stdout_path() const { return stdout_path_; }
  const std::filesystem::path& stderr_path() const { return stderr_path_; }

  // "argv[0] (pid N): running|<exit>" and the last lines of stderr, for assertion messages.
  std::string describe();

 private:
  // Reaps the child if it has exited; requires mutex_.
  void poll_locked(bool block);

  TempDir dir_;
  std::vector<std::string> argv_;
  std::filesystem::path stdout_path_;
  std::filesystem::path stderr_path_;
  pid_t pid_ = 0;
  std::mutex mutex_;  // guards status_ (reaping)
  std::optional<int> status_;
};

// "exit code 3", "signal 9 (Killed)".
std::string describe_exit(int status);

// The last `max_lines` lines of a text.
std::string last_lines(const std::string& text, std::size_t max_lines = 20);

}  // namespace orgd::testing
