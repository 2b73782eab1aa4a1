#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace orgd {

// Plain settings of the embedded nats-server; built from the validated config by its owner.
// A string in the nats-server config syntax (double-quoted, backslash escapes).
std::string nats_config_string(const std::string& s);

struct EmbeddedServerSettings {
  // Searched on PATH when it holds no '/'.
  std::string binary = "nats-server";
  std::string host = "127.0.0.1";
  // 0: the server picks a free port; port() and url() report it once start() returned.
  std::uint16_t port = 4222;
  // The server's own directory: JetStream keeps its data in store_dir/jetstream; the generated
  // config (nats-server.conf) and the log (nats-server.log, the previous run's kept as
  // nats-server.log.1) sit next to it. Created if missing. Required.
  std::string store_dir;
  // How long start() waits for the server to accept clients (and answer JetStream requests).
  std::chrono::milliseconds ready_timeout{10000};
  std::string server_name = "orgd-embedded";

  // The daemon leaves these at their defaults; the test fixtures use them for clusters,
  // authentication and servers without JetStream.
  bool jetstream = true;
  // Ready also means "$JS.API.INFO answers". Off for cluster nodes: their JetStream needs a
  // meta leader, hence peers started after them.
  bool wait_for_jetstream = true;
  // Appended verbatim to the generated config (authorization, cluster, limits).
  std::string extra_config;

  // The server's whole environment. nullopt: the allow-list (PATH, HOME, LANG, TZ) of orgd's
  // process environment, so orgd's credentials (NATS token, GITHUB_TOKEN, master key) never
  // reach it.
  std::optional<std::map<std::string, std::string>> environment;

  // Start the server again when it dies after start() (not after stop() or kill()), on the same
  // port and store, after restart_backoff, doubled after each failed attempt up to
  // restart_backoff_max. The daemon turns this on; test fixtures leave it off to control
  // outages themselves.
  bool restart_on_exit = false;
  std::chrono::milliseconds restart_backoff{200};
  std::chrono::milliseconds restart_backoff_max{10000};
  // Called (on the supervising thread) after each restart that made the server ready again.
  std::function<void()> on_restart;
};

// A nats-server child process with JetStream, owned by orgd: started before orgd connects,
// stopped after orgd drained; with restart_on_exit, started again (with a backoff, on the same
// port) when it dies in between. Its environment is the allow-list only (see settings). It never
// outlives orgd, even when orgd is killed with SIGKILL: the child asks the kernel for SIGTERM when
// its parent dies (PR_SET_PDEATHSIG). It runs in its own process group, so a Ctrl-C in the terminal
// reaches orgd only, and orgd stops the server after its own drain.
//
// Thread safety: every method may be called from any thread. stop() cancels a start() still
// waiting for readiness.
class EmbeddedNatsServer {
 public:
  explicit EmbeddedNatsServer(EmbeddedServerSettings settings);
  ~EmbeddedNatsServer();  // stop()
  EmbeddedNatsServer(const EmbeddedNatsServer&) = delete;
  EmbeddedNatsServer& operator=(const EmbeddedNatsServer&) = delete;

  // Starts the server and returns once it accepts clients (a real NATS connect succeeds or is
  // refused only for lack of credentials) and, with JetStream, once JetStream answers.
  // Throws std::runtime_error with a message an operator can act on: binary not found, port
  // in use, the server exited during start-up (with the tail of its log), not ready in time.
  // After a failed start no process is left behind. Throws std::logic_error if already running.
  //
  // PR_SET_PDEATHSIG follows the *thread* that forked, not the process: call start() from a
  // thread that lives as long as the process (the main thread), or the server is sent SIGTERM
  // when that thread exits.
  void start();

  // SIGTERM, up to 5 s for a clean shutdown (JetStream flushes its store), then SIGKILL.
  // Reaps the child. Idempotent; a no-op when not running.
  void stop();

  // SIGKILL at once (a crash, for tests of recovery); reaps the child. The store is kept.
  void kill();

  // False once the child exited, whoever stopped it (it is reaped here if it died on its own).
  bool running();

  // The child's pid while running, else 0.
  pid_t pid() const { return pid_.load(); }
  // nats://host:port, with the actual port once started.
  std::string url() const;
  std::uint16_t port() const { return port_.load(); }
  std::filesystem::path log_path() const;
  std::filesystem::path config_path() const;
  const EmbeddedServerSettings& settings() const { return settings_; }

 private:
  // Writes the config, spawns the server on `port` (0: it picks one) and waits until it is
  // ready; throws, leaving nothing running, when it is not. Requires mutex_.
  void launch(std::uint16_t port);
  // The restart loop (restart_on_exit): runs on supervisor_ until stop_supervising().
  void supervise();
  // Ends and joins the restart loop, if any.
  void stop_supervising();
  // Polls until the child accepts clients; throws when it exits, on stop() or at the deadline.
  // Requires mutex_.
  void wait_until_ready(const std::filesystem::path& ports_dir);
  // SIGTERM with a grace period (or SIGKILL at once) and reap. Requires mutex_.
  void terminate(bool graceful);
  // Reaps the child if it has exited; true if it is gone. Requires mutex_.
  bool reap_if_exited(int* status);

  const EmbeddedServerSettings settings_;
  std::filesystem::path store_dir_;
  mutable std::mutex mutex_;  // guards the child's lifecycle (start, reap, stop)
  std::atomic<pid_t> pid_{0};
  std::atomic<std::uint16_t> port_;
  std::atomic<bool> cancel_start_{false};
  std::mutex supervise_mutex_;  // guards supervising_
  std::condition_variable supervise_cv_;
  bool supervising_ = false;
  std::thread supervisor_;  // started and joined by start(), stop() and kill() only
};

}  // namespace orgd
