#include "daemon/bus/embedded_server.hpp"

#include <fcntl.h>
#include <nats/nats.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "daemon/core/logging.hpp"
#include "daemon/core/unique_fd.hpp"

extern char** environ;

namespace orgd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kPoll = 10ms;
constexpr auto kStopGrace = 5s;
constexpr const char* kConfigName = "nats-server.conf";
constexpr const char* kLogName = "nats-server.log";
constexpr const char* kPortsDirName = "ports";

std::string errno_text(int err) { return std::error_code(err, std::system_category()).message(); }

std::string find_binary(const std::string& binary) {
  if (binary.empty()) throw std::runtime_error("nats-server binary: empty name");
  if (binary.find('/') != std::string::npos) {
    if (::access(binary.c_str(), X_OK) != 0) {
      throw std::runtime_error("nats-server binary '" + binary +
                               "' not found or not executable: " + errno_text(errno));
    }
    return binary;
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    auto end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    start = end + 1;
    if (dir.empty()) dir = ".";
    const fs::path candidate = fs::path(dir) / binary;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
  }
  throw std::runtime_error("nats-server binary '" + binary +
                           "' not found on PATH (install nats-server, or give its full path "
                           "in nats.server_binary)");
}

// Fails early, with a clear message, when something already listens on host:port. The server
// sets SO_REUSEADDR like this probe, so a port left in TIME_WAIT is not reported as taken.
void check_port_free(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    throw std::runtime_error("embedded nats-server: cannot resolve host '" + host +
                             "': " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, &::freeaddrinfo);
  UniqueFd sock(::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol));
  if (sock.get() < 0) return;  // let the server report it
  const int one = 1;
  ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(sock.get(), found->ai_addr, found->ai_addrlen) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      throw std::runtime_error("embedded nats-server: port " + host + ":" + service +
                               " is already in use (another nats-server or orgd running? "
                               "stop it, or point orgd at it with nats.urls and "
                               "nats.embedded: false)");
    }
    throw std::runtime_error("embedded nats-server: cannot listen on " + host + ":" + service +
                             ": " + errno_text(err));
  }
}

// A string in the nats-server config syntax (double-quoted, backslash escapes).
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string host_for_url(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

std::string tail_of(const fs::path& file, std::size_t max_lines = 15) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return "(no log)";
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(in.tellg());
  const std::streamoff from = std::max<std::streamoff>(0, size - 4096);
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (from > 0 && !lines.empty()) lines.erase(lines.begin());  // a partial first line
  if (lines.size() > max_lines) lines.erase(lines.begin(), lines.end() - max_lines);
  std::string out;
  for (const auto& l : lines) out += "  " + l + "\n";
  return out.empty() ? "(empty log)" : out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

// The client port written by `--ports_file_dir` ({"nats":["nats://127.0.0.1:PORT"]}), or 0
// while the file is missing or still being written.
std::uint16_t read_ports_file(const fs::path& dir, pid_t pid) {
  const std::string suffix = "_" + std::to_string(pid) + ".ports";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::ifstream in(entry.path());
    const auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!json.is_object() || !json.contains("nats") || !json["nats"].is_array() ||
        json["nats"].empty() || !json["nats"][0].is_string()) {
      return 0;
    }
    const auto url = json["nats"][0].get<std::string>();
    const auto colon = url.rfind(':');
    if (colon == std::string::npos) return 0;
    const int port = std::atoi(url.c_str() + colon + 1);
    return port > 0 && port < 65536 ? static_cast<std::uint16_t>(port) : 0;
  }
  return 0;
}

enum class Probe { down, up, ready };

// A real client connect (what orgd will do next). Refused for lack of credentials or of TLS
// still means the server accepts clients; JetStream can only be checked when the connect
// succeeds.
Probe probe(const std::string& url, bool check_jetstream) {
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return Probe::down;
  natsOptions_SetURL(opts, url.c_str());
  natsOptions_SetTimeout(opts, 1000);
  natsOptions_SetAllowReconnect(opts, false);
  natsOptions_SetName(opts, "orgd-embedded-probe");
  natsConnection* conn = nullptr;
  const natsStatus s = natsConnection_Connect(&conn, opts);
  natsOptions_Destroy(opts);
  if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED ||
      s == NATS_SECURE_CONNECTION_REQUIRED || s == NATS_SSL_ERROR) {
    return Probe::ready;
  }
  if (s != NATS_OK) return Probe::down;
  Probe result = Probe::ready;
  if (check_jetstream) {
    natsMsg* reply = nullptr;
    result = Probe::up;
    if (natsConnection_RequestString(&reply, conn, "$JS.API.INFO", "", 1000) == NATS_OK) {
      const auto json =
          nlohmann::json::parse(std::string(natsMsg_GetData(reply),
                                            static_cast<std::size_t>(natsMsg_GetDataLength(reply))),
                                nullptr, false);
      if (json.is_object() && !json.contains("error")) result = Probe::ready;
      natsMsg_Destroy(reply);
    }
  }
  natsConnection_Destroy(conn);
  return result;
}

// Everything the child needs, prepared before fork(): between fork() and execve() the child
// of a multi-threaded process may only make async-signal-safe calls (no allocation).
struct ChildPlan {
  std::string binary;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::vector<char*> argv;
  std::vector<char*> envp;

  void finalize() {
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

[[noreturn]] void child_fail(int report_fd, int err) {
  ssize_t ignored = ::write(report_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

// The child side of fork(): async-signal-safe calls only.
[[noreturn]] void exec_child(const ChildPlan& plan, pid_t parent, int null_fd, int log_fd,
                             int report_fd) {
  // Default dispositions and an empty mask: the parent blocked every signal around fork(),
  // and ignored signals would stay ignored across execve().
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // Own process group: a terminal's Ctrl-C goes to orgd, which stops the server after it
  // drained. PDEATHSIG: the kernel sends SIGTERM when orgd dies, however it dies; checking
  // getppid() afterwards closes the window where orgd died before prctl().
  ::setpgid(0, 0);
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) child_fail(report_fd, errno);
  if (::getppid() != parent) ::_exit(1);

  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
      ::dup2(log_fd, STDERR_FILENO) < 0) {
    child_fail(report_fd, errno);
  }
  // Nothing else of orgd's leaks into the server (sockets, the vault's files): close every
  // other descriptor but the exec-error pipe, which is close-on-exec.
  const auto report = static_cast<unsigned>(report_fd);
  if (::syscall(SYS_close_range, 3U, report - 1, 0U) != 0 ||
      ::syscall(SYS_close_range, report + 1, ~0U, 0U) != 0) {
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != report_fd) ::close(fd);
    }
  }
  ::execve(plan.binary.c_str(), plan.argv.data(), plan.envp.data());
  child_fail(report_fd, errno);
}

std::string render_config(const EmbeddedServerSettings& settings, const fs::path& store_dir) {
  std::string config =
      "# Generated by orgd at every start of its embedded nats-server: edits are lost.\n"
      "server_name: " +
      quoted(settings.server_name) + "\n" + "host: " + quoted(settings.host) + "\n" +
      // -1: the server picks a free port and writes it to the ports file.
      "port: " + (settings.port == 0 ? std::string("-1") : std::to_string(settings.port)) +
      "\n"
      "# No monitoring port: orgd serves its own /healthz and /metrics.\n";
  if (settings.jetstream) {
    config += "jetstream {\n  store_dir: " + quoted(store_dir.string()) + "\n}\n";
  }
  if (!settings.extra_config.empty()) config += "\n" + settings.extra_config + "\n";
  return config;
}

// Forks and executes `plan` with its output appended to `log`; returns the child's pid once
// execve() succeeded, throws otherwise (nothing left running).
pid_t spawn(const ChildPlan& plan, const fs::path& log) {
  UniqueFd null_fd(above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  UniqueFd log_fd(above_stdio(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640)));
  if (null_fd.get() < 0 || log_fd.get() < 0) {
    throw std::runtime_error("embedded nats-server: cannot open " + log.string() + ": " +
                             errno_text(errno));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error("embedded nats-server: pipe: " + errno_text(errno));
  }
  UniqueFd report_read(above_stdio(pipe_fds[0]));
  UniqueFd report_write(above_stdio(pipe_fds[1]));

  // Signals stay blocked in the forking thread until the child has reset its dispositions, so
  // no handler of orgd's ever runs in the child.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) exec_child(plan, parent, null_fd.get(), log_fd.get(), report_write.get());
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (child < 0) throw std::runtime_error("embedded nats-server: fork: " + errno_text(fork_errno));
  report_write.reset();

  // EOF: execve() succeeded (the pipe is close-on-exec); an int: the child's errno.
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(report_read.get(), &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    throw std::runtime_error("embedded nats-server: cannot execute '" + plan.binary +
                             "': " + errno_text(exec_errno));
  }
  return child;
}

}  // namespace

EmbeddedNatsServer::EmbeddedNatsServer(EmbeddedServerSettings settings)
    : settings_(std::move(settings)), port_(settings_.port) {
  if (!settings_.store_dir.empty()) store_dir_ = fs::absolute(settings_.store_dir);
}

EmbeddedNatsServer::~EmbeddedNatsServer() { stop(); }

std::filesystem::path EmbeddedNatsServer::log_path() const { return store_dir_ / kLogName; }

std::filesystem::path EmbeddedNatsServer::config_path() const { return store_dir_ / kConfigName; }

std::string EmbeddedNatsServer::url() const {
  return "nats://" + host_for_url(settings_.host) + ":" + std::to_string(port_.load());
}

void EmbeddedNatsServer::start() {
  auto log = logging::get("bus");
  cancel_start_.store(false);
  std::lock_guard lock(mutex_);
  if (pid_.load() > 0) throw std::logic_error("embedded nats-server is already running");
  if (store_dir_.empty()) throw std::runtime_error("embedded nats-server: store_dir is required");

  const std::string binary = find_binary(settings_.binary);
  if (settings_.port != 0) check_port_free(settings_.host, settings_.port);
  port_.store(settings_.port);

  std::error_code ec;
  fs::create_directories(store_dir_, ec);
  if (ec) {
    throw std::runtime_error("embedded nats-server: cannot create " + store_dir_.string() + ": " +
                             ec.message());
  }
  const fs::path ports_dir = store_dir_ / kPortsDirName;
  fs::remove_all(ports_dir, ec);  // stale files of a server that was killed
  fs::create_directories(ports_dir, ec);
  // One previous log is kept, so a restart after a crash still shows what happened.
  if (fs::exists(log_path(), ec)) fs::rename(log_path(), fs::path(log_path()) += ".1", ec);

  {
    std::ofstream out(config_path(), std::ios::trunc);
    out << render_config(settings_, store_dir_);
    out.close();
    if (!out) {
      throw std::runtime_error("embedded nats-server: cannot write " + config_path().string());
    }
  }

  ChildPlan plan;
  plan.binary = binary;
  plan.args = {binary, "-c", config_path().string(), "--ports_file_dir", ports_dir.string()};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) plan.env.emplace_back(*e);
  plan.finalize();
  const pid_t child = spawn(plan, log_path());
  pid_.store(child);
  log->debug("embedded nats-server pid {} starting ({}, log {})", child, binary,
             log_path().string());

  try {
    wait_until_ready(ports_dir);
  } catch (...) {
    terminate(/*graceful=*/false);  // no process is left behind by a failed start
    throw;
  }
  log->info("embedded nats-server pid {} ready on {} (store {})", child, url(),
            store_dir_.string());
}

void EmbeddedNatsServer::wait_until_ready(const std::filesystem::path& ports_dir) {
  // Ready: it accepts a client connection and, with JetStream, answers $JS.API.INFO.
  const auto deadline = Clock::now() + settings_.ready_timeout;
  const bool check_js = settings_.jetstream && settings_.wait_for_jetstream;
  const pid_t child = pid_.load();
  for (;;) {
    int status = 0;
    if (reap_if_exited(&status)) {
      const std::string tail = tail_of(log_path());
      const bool in_use = tail.find("address already in use") != std::string::npos;
      throw std::runtime_error(
          "embedded nats-server exited during start-up (" + describe_status(status) + ")" +
          // The log names the address (client or cluster port) that was taken.
          (in_use ? ": a port it needs is already in use" : "") + " (config " +
          config_path().string() + "); last lines of " + log_path().string() + ":\n" + tail);
    }
    if (port_.load() == 0) port_.store(read_ports_file(ports_dir, child));
    if (port_.load() != 0 && probe(url(), check_js) == Probe::ready) return;
    if (cancel_start_.load()) {
      throw std::runtime_error("embedded nats-server: start cancelled by stop()");
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error("embedded nats-server did not accept clients" +
                               std::string(check_js ? " with JetStream" : "") + " within " +
                               std::to_string(settings_.ready_timeout.count()) +
                               " ms; last lines of " + log_path().string() + ":\n" +
                               tail_of(log_path()));
    }
    std::this_thread::sleep_for(kPoll);
  }
}

bool EmbeddedNatsServer::reap_if_exited(int* status) {
  const pid_t pid = pid_.load();
  if (pid <= 0) return true;
  int st = 0;
  const pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == 0) return false;
  if (r < 0 && errno == EINTR) return false;
  // r == pid: reaped here. ECHILD: reaped by someone else (SIGCHLD ignored, a waitpid(-1)).
  if (status != nullptr) *status = r == pid ? st : 0;
  pid_.store(0);
  return true;
}

void EmbeddedNatsServer::terminate(bool graceful) {
  const pid_t pid = pid_.load();
  if (pid <= 0) return;
  auto log = logging::get("bus");
  if (graceful) {
    ::kill(pid, SIGTERM);
    const auto deadline = Clock::now() + kStopGrace;
    while (Clock::now() < deadline) {
      if (reap_if_exited(nullptr)) {
        log->info("embedded nats-server pid {} stopped", pid);
        return;
      }
      std::this_thread::sleep_for(kPoll);
    }
    log->warn("embedded nats-server pid {} ignored SIGTERM for {} s: killing it", pid,
              std::chrono::duration_cast<std::chrono::seconds>(kStopGrace).count());
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  pid_.store(0);
  if (!graceful) log->info("embedded nats-server pid {} killed", pid);
}

void EmbeddedNatsServer::stop() {
  cancel_start_.store(true);
  std::lock_guard lock(mutex_);
  terminate(/*graceful=*/true);
}

void EmbeddedNatsServer::kill() {
  cancel_start_.store(true);
  std::lock_guard lock(mutex_);
  terminate(/*graceful=*/false);
}

bool EmbeddedNatsServer::running() {
  std::lock_guard lock(mutex_);
  const pid_t pid = pid_.load();
  int status = 0;
  if (pid > 0 && reap_if_exited(&status)) {
    logging::get("bus")->error("embedded nats-server pid {} exited unexpectedly ({})", pid,
                               describe_status(status));
  }
  return pid_.load() > 0;
}

}  // namespace orgd
