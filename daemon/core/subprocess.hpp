#pragma once

#include <sys/types.h>

#include <csignal>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/environment.hpp"
#include "daemon/core/secret.hpp"
#include "daemon/core/unique_fd.hpp"

// The one way orgd (and its tests) start a child process: the embedded nats-server, exec deploy
// commands and the test fixtures' helpers all go through spawn_child().
namespace orgd {

// What every child of orgd may see of orgd's environment. Everything else (NATS_TOKEN, NATS_JWT,
// NATS_NKEY_SEED, GITHUB_TOKEN, ORGD_MASTER_KEY, ...) stays in orgd: a child gets a variable
// only when it is on this list or named explicitly (an exec target's `env:`).
inline const std::vector<std::string> kChildEnvironmentAllowList = {"PATH", "HOME", "LANG", "TZ"};

// The allow-list's variables (and `extra` names) that are set in `from`, by name.
std::map<std::string, std::string> child_environment(const Environment& from,
                                                     const std::vector<std::string>& extra = {});

// `name` when it holds a '/', else the first executable file `name` in the ':'-separated
// directories of `path` (an empty entry is the current directory); nullopt when there is none.
std::optional<std::string> find_executable(const std::string& name, const std::string& path);

struct SpawnOptions {
  // argv[0] is the program: a path, or a name searched on the PATH of `env` (or, when `env`
  // has none, /usr/local/bin:/usr/bin:/bin).
  std::vector<std::string> argv;
  // The child's whole environment: nothing is inherited.
  std::map<std::string, std::string> env;
  // Variables whose values are secrets (borrowed: they must outlive spawn_child()). Their
  // "NAME=value" strings are built in sodium memory, wiped once the child has exec'd; the only
  // other copy is the child's own environment. A name also in `env` is a SpawnError.
  std::vector<std::pair<std::string, const Secret*>> secret_env;
  // Empty: orgd's working directory.
  std::string workdir;
  // Descriptors that become the child's stdout and stderr (may be the same one); -1: /dev/null.
  // They must be above 2 (above_stdio()), or one dup2() could clobber the other. Ignored when
  // capture_output is set. stdin is always /dev/null.
  int stdout_fd = -1;
  int stderr_fd = -1;
  // stdout and stderr both go to one pipe whose read end is SpawnedChild::output.
  bool capture_output = false;
  // The child leads a process group of its own, so a kill(-pid) reaches everything it starts
  // and a terminal's Ctrl-C reaches orgd alone.
  bool new_process_group = false;
  // Sent to the child when its parent dies (PR_SET_PDEATHSIG); 0: none. Linux sends it when the
  // *thread* that forked exits, not the process: spawn from a thread that lives as long as the
  // child should.
  int parent_death_signal = SIGKILL;
};

struct SpawnedChild {
  pid_t pid = 0;
  UniqueFd output;  // with capture_output: the read end (close-on-exec, blocking)
};

// The child could not be started: no program, a working directory it cannot enter, fork or
// execve failed. Nothing is left running.
class SpawnError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Starts argv with exactly `env`, stdin on /dev/null, no other descriptor of orgd's (close-on-exec
// or not), default signal dispositions and an empty signal mask. Returns once execve() succeeded;
// throws SpawnError with a message naming the program (or the directory) otherwise. The caller
// reaps the child (reap_child()).
SpawnedChild spawn_child(const SpawnOptions& options);

// waitpid() without EINTR: the wait status once `pid` has exited and was reaped here, nullopt
// while it runs (block: waits for the exit). A child reaped elsewhere (ECHILD) reads as status 0.
std::optional<int> reap_child(pid_t pid, bool block);

// "exit code 3", "signal 9 (Killed)" for a wait status.
std::string describe_wait_status(int status);

}  // namespace orgd
