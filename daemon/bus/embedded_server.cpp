#include "daemon/bus/embedded_server.hpp"

#include <fcntl.h>
#include <nats/nats.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
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

#include "daemon/core/environment.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/subprocess.hpp"
#include "daemon/core/unique_fd.hpp"

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
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";
// How often a supervised server is checked for having died.
constexpr auto kWatchInterval = 50ms;

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
  if (auto found = find_executable(binary, path_env != nullptr ? path_env : kDefaultPath)) {
    return *found;
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

std::string quoted(const std::string& s) { return nats_config_string(s); }

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

std::string render_config(const EmbeddedServerSettings& settings, std::uint16_t port,
                          const fs::path& store_dir) {
  std::string config =
      "# Generated by orgd at every start of its embedded nats-server: edits are lost.\n"
      "server_name: " +
      quoted(settings.server_name) + "\n" + "host: " + quoted(settings.host) + "\n" +
      // -1: the server picks a free port and writes it to the ports file.
      "port: " + (port == 0 ? std::string("-1") : std::to_string(port)) +
      "\n"
      "# No monitoring port: orgd serves its own /healthz and /metrics.\n";
  if (settings.jetstream) {
    config += "jetstream {\n  store_dir: " + quoted(store_dir.string()) + "\n}\n";
  }
  if (!settings.extra_config.empty()) config += "\n" + settings.extra_config + "\n";
  return config;
}

}  // namespace

std::string nats_config_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

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
  cancel_start_.store(false);
  {
    std::lock_guard lock(mutex_);
    if (pid_.load() > 0) throw std::logic_error("embedded nats-server is already running");
    if (store_dir_.empty()) {
      throw std::runtime_error("embedded nats-server: store_dir is required");
    }
    launch(settings_.port);
  }
  if (settings_.restart_on_exit) {
    stop_supervising();  // one left from a server that was killed on purpose
    std::lock_guard lock(supervise_mutex_);
    supervising_ = true;
    // The restarted servers' PR_SET_PDEATHSIG follows this thread, which lives until stop().
    supervisor_ = std::thread([this] { supervise(); });
  }
}

void EmbeddedNatsServer::launch(std::uint16_t port) {
  auto log = logging::get("bus");
  const std::string binary = find_binary(settings_.binary);
  if (port != 0) check_port_free(settings_.host, port);
  port_.store(port);

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
    out << render_config(settings_, port, store_dir_);
    out.close();
    if (!out) {
      throw std::runtime_error("embedded nats-server: cannot write " + config_path().string());
    }
  }

  UniqueFd log_fd(
      above_stdio(::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640)));
  if (log_fd.get() < 0) {
    throw std::runtime_error("embedded nats-server: cannot open " + log_path().string() + ": " +
                             errno_text(errno));
  }
  SpawnOptions options;
  options.argv = {binary, "-c", config_path().string(), "--ports_file_dir", ports_dir.string()};
  // Never orgd's whole environment: it holds the NATS credentials, GITHUB_TOKEN, the master key.
  options.env = settings_.environment.value_or(child_environment(Environment::current()));
  options.stdout_fd = log_fd.get();
  options.stderr_fd = log_fd.get();
  // Own process group: a terminal's Ctrl-C goes to orgd, which stops the server after it
  // drained. SIGTERM when orgd dies, however it dies.
  options.new_process_group = true;
  options.parent_death_signal = SIGTERM;
  pid_t child = 0;
  try {
    child = spawn_child(options).pid;
  } catch (const SpawnError& e) {
    throw std::runtime_error(std::string("embedded nats-server: ") + e.what());
  }
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

void EmbeddedNatsServer::supervise() {
  auto log = logging::get("bus");
  auto backoff = settings_.restart_backoff;
  // True once supervising ended (stop(), kill()) while waiting up to `d`.
  auto ended_within = [this](std::chrono::milliseconds d) {
    std::unique_lock lock(supervise_mutex_);
    return supervise_cv_.wait_for(lock, d, [this] { return !supervising_; });
  };
  for (;;) {
    if (ended_within(kWatchInterval)) return;
    {
      std::lock_guard lock(mutex_);
      const pid_t pid = pid_.load();
      int status = 0;
      if (pid > 0 && !reap_if_exited(&status)) continue;
      if (pid > 0) {
        log->error("embedded nats-server pid {} exited unexpectedly ({}): restarting it in {} ms",
                   pid, describe_wait_status(status), backoff.count());
      }
    }
    if (ended_within(backoff)) return;
    bool restarted = false;
    {
      std::lock_guard lock(mutex_);
      if (pid_.load() > 0) continue;
      try {
        launch(port_.load());  // the same port: clients reconnect to the URL they know
        restarted = true;
        backoff = settings_.restart_backoff;
      } catch (const std::exception& e) {
        backoff = std::min(backoff * 2, settings_.restart_backoff_max);
        log->error("embedded nats-server did not restart: {}; next attempt in {} ms", e.what(),
                   backoff.count());
      }
    }
    if (restarted) {
      log->warn("embedded nats-server restarted: pid {} on {}", pid_.load(), url());
      if (settings_.on_restart) settings_.on_restart();
    }
  }
}

void EmbeddedNatsServer::stop_supervising() {
  {
    std::lock_guard lock(supervise_mutex_);
    supervising_ = false;
  }
  supervise_cv_.notify_all();
  if (supervisor_.joinable() && supervisor_.get_id() != std::this_thread::get_id()) {
    supervisor_.join();
  }
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
          "embedded nats-server exited during start-up (" + describe_wait_status(status) + ")" +
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
  stop_supervising();  // before the server goes: its end is no crash to repair
  std::lock_guard lock(mutex_);
  terminate(/*graceful=*/true);
}

void EmbeddedNatsServer::kill() {
  cancel_start_.store(true);
  stop_supervising();
  std::lock_guard lock(mutex_);
  terminate(/*graceful=*/false);
}

bool EmbeddedNatsServer::running() {
  std::lock_guard lock(mutex_);
  const pid_t pid = pid_.load();
  int status = 0;
  if (pid > 0 && reap_if_exited(&status)) {
    logging::get("bus")->error("embedded nats-server pid {} exited unexpectedly ({})", pid,
                               describe_wait_status(status));
  }
  return pid_.load() > 0;
}

}  // namespace orgd
