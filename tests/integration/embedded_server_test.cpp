#include "daemon/bus/embedded_server.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "daemon/app/daemon.hpp"
#include "daemon/bus/nats_settings.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/subprocess.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::port_bindable;
using testing::TempDir;

// A listening loopback socket on a free port: "someone else's server".
class Squatter {
 public:
  Squatter() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot open a listening socket");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Squatter() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// Gone: reaped, or never our child and no longer in /proc (or a zombie waiting for a reaper
// that is not us).
bool process_gone(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  const auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < line.size() &&
         (line[close_paren + 2] == 'Z' || line[close_paren + 2] == 'X');
}

EmbeddedServerSettings settings_in(const TempDir& dir) {
  EmbeddedServerSettings settings;
  settings.binary = testing::nats_server_binary();
  settings.port = 0;
  settings.store_dir = (dir / "nats").string();
  return settings;
}

std::string start_error(EmbeddedNatsServer& server) {
  try {
    server.start();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(started)";
}

TEST(EmbeddedNatsServerTest, AcceptsClientsWithJetStream) {
  TempDir dir;
  EmbeddedNatsServer server(settings_in(dir));
  server.start();
  EXPECT_GT(server.pid(), 0);
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.url(), "nats://127.0.0.1:" + std::to_string(server.port()));
  EXPECT_TRUE(server.running());
  EXPECT_TRUE(testing::jetstream_answers(server.url()));
  EXPECT_TRUE(fs::is_directory(dir / "nats" / "jetstream"));

  const std::string config = testing::read_file(server.config_path());
  EXPECT_NE(config.find("server_name: \"orgd-embedded\""), std::string::npos) << config;
  EXPECT_NE(config.find("store_dir"), std::string::npos) << config;
  EXPECT_EQ(config.find("http"), std::string::npos) << "no monitoring port:\n" << config;
  EXPECT_NE(testing::read_file(server.log_path()).find("Server is ready"), std::string::npos);
  EXPECT_THROW(server.start(), std::logic_error);
}

// nats.server_include: the org's NATS controller in a container needs what orgd does not write
// itself (authorization, websocket). The fragment is included by its absolute path, so a
// relative path in the config works whatever orgd's working directory is.
TEST(EmbeddedNatsServerTest, IncludesTheServerConfigFragment) {
  TempDir dir;
  const std::string token = "embedded-include-token-7f3a";
  {
    std::ofstream(dir / "auth.conf") << "authorization { token: \"" << token << "\" }\n";
  }
  NatsConfig nats;
  nats.embedded = true;
  nats.urls = {"nats://127.0.0.1:4222"};
  nats.data_dir = dir.path().string();
  nats.server_include = fs::relative(dir / "auth.conf").string();
  EmbeddedServerSettings settings = embedded_server_settings(nats);
  // Relative to the generated config's directory (<data_dir>/nats), however it was written.
  EXPECT_EQ(settings.extra_config, "include \"../auth.conf\"");
  settings.binary = testing::nats_server_binary();
  settings.port = 0;
  settings.wait_for_jetstream = false;  // its readiness probe has no token
  EmbeddedNatsServer server(settings);
  server.start();

  natsConnection* anonymous = nullptr;
  EXPECT_NE(natsConnection_ConnectTo(&anonymous, server.url().c_str()), NATS_OK)
      << "the fragment's authorization was not applied";
  natsConnection_Destroy(anonymous);

  natsConnection* with_token = nullptr;
  const std::string url =
      "nats://" + token + "@127.0.0.1:" + std::to_string(server.port());
  EXPECT_EQ(natsConnection_ConnectTo(&with_token, url.c_str()), NATS_OK);
  natsConnection_Destroy(with_token);
}

TEST(EmbeddedNatsServerTest, StopEndsTheProcessAndFreesThePort) {
  TempDir dir;
  EmbeddedNatsServer server(settings_in(dir));
  server.start();
  const pid_t pid = server.pid();
  const auto port = server.port();
  { auto conn = testing::connect_client(server.url()); }

  server.stop();
  EXPECT_EQ(server.pid(), 0);
  EXPECT_FALSE(server.running());
  EXPECT_NE(::kill(pid, 0), 0) << "nats-server pid " << pid << " still exists";
  EXPECT_TRUE(port_bindable(port));
  server.stop();  // idempotent
  server.kill();
}

TEST(EmbeddedNatsServerTest, StartsAgainOnItsStore) {
  TempDir dir;
  auto settings = settings_in(dir);
  {
    EmbeddedNatsServer first(settings);
    first.start();
    settings.port = first.port();
  }  // the destructor stops it
  EmbeddedNatsServer second(settings);
  second.start();
  EXPECT_EQ(second.port(), settings.port);
  EXPECT_TRUE(fs::exists(fs::path(second.log_path()) += ".1")) << "the previous log is kept";
}

TEST(EmbeddedNatsServerTest, TakenPortIsAClearError) {
  Squatter squatter;
  TempDir dir;
  auto settings = settings_in(dir);
  settings.port = squatter.port();
  EmbeddedNatsServer server(settings);
  const std::string error = start_error(server);
  EXPECT_NE(error.find("already in use"), std::string::npos) << error;
  EXPECT_NE(error.find(std::to_string(squatter.port())), std::string::npos) << error;
  EXPECT_EQ(server.pid(), 0);
}

TEST(EmbeddedNatsServerTest, MissingBinaryIsAClearError) {
  TempDir dir;
  auto settings = settings_in(dir);
  settings.binary = "orgd-no-such-nats-server";
  EmbeddedNatsServer on_path(settings);
  std::string error = start_error(on_path);
  EXPECT_NE(error.find("not found on PATH"), std::string::npos) << error;
  EXPECT_NE(error.find("orgd-no-such-nats-server"), std::string::npos) << error;

  settings.binary = (dir / "missing" / "nats-server").string();
  EmbeddedNatsServer by_path(settings);
  error = start_error(by_path);
  EXPECT_NE(error.find("not found"), std::string::npos) << error;
  EXPECT_NE(error.find(settings.binary), std::string::npos) << error;
}

TEST(EmbeddedNatsServerTest, EarlyExitShowsTheLogTail) {
  TempDir dir;
  auto settings = settings_in(dir);
  settings.extra_config = "jetstream_this_is_not { valid";
  EmbeddedNatsServer server(settings);
  const std::string error = start_error(server);
  EXPECT_NE(error.find("exited during start-up"), std::string::npos) << error;
  EXPECT_NE(error.find("nats-server.log"), std::string::npos) << error;
  EXPECT_NE(error.find("nats-server.conf"), std::string::npos) << error;
  EXPECT_NE(error.find("Parse error"), std::string::npos) << "the server's own words:\n" << error;
  EXPECT_EQ(server.pid(), 0);
}

// A stand-in "server" that never accepts clients.
std::string silent_binary(const TempDir& dir) {
  const auto path = dir / "silent-server";
  testing::write_file(path, "#!/bin/sh\nexec sleep 60\n");
  fs::permissions(path, fs::perms::owner_all);
  return path.string();
}

TEST(EmbeddedNatsServerTest, NotReadyInTimeIsAClearErrorAndLeavesNothing) {
  TempDir dir;
  auto settings = settings_in(dir);
  settings.binary = silent_binary(dir);
  settings.ready_timeout = 300ms;
  EmbeddedNatsServer server(settings);
  const auto start = std::chrono::steady_clock::now();
  const std::string error = start_error(server);
  EXPECT_NE(error.find("did not accept clients"), std::string::npos) << error;
  EXPECT_NE(error.find("300 ms"), std::string::npos) << error;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(server.pid(), 0);
}

TEST(EmbeddedNatsServerTest, StopCancelsAStartInProgress) {
  TempDir dir;
  auto settings = settings_in(dir);
  settings.binary = silent_binary(dir);
  settings.ready_timeout = 60s;
  EmbeddedNatsServer server(settings);
  std::string error;
  std::thread starter([&] { error = start_error(server); });
  EXPECT_TRUE(testing::wait_until([&] { return server.pid() > 0; }, 10s));
  const pid_t pid = server.pid();
  const auto start = std::chrono::steady_clock::now();
  server.stop();
  starter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_NE(error.find("cancelled"), std::string::npos) << error;
  EXPECT_EQ(server.pid(), 0);
  EXPECT_NE(::kill(pid, 0), 0);
}

TEST(EmbeddedNatsServerTest, NoticesAServerThatDied) {
  TempDir dir;
  EmbeddedNatsServer server(settings_in(dir));
  server.start();
  ::kill(server.pid(), SIGKILL);
  EXPECT_TRUE(testing::wait_until([&] { return !server.running(); }, 10s));
  EXPECT_EQ(server.pid(), 0);
  server.start();  // and can start it again
  EXPECT_TRUE(server.running());
}

// Sets variables in the real process environment for one test, restoring them afterwards.
class ScopedProcessEnv {
 public:
  explicit ScopedProcessEnv(const std::map<std::string, std::string>& vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>{old} : std::nullopt);
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedProcessEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// NAME=value entries of a live process's environment.
std::vector<std::string> environ_of(pid_t pid) {
  const std::string text = testing::read_file("/proc/" + std::to_string(pid) + "/environ");
  std::vector<std::string> entries;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\0', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) entries.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return entries;
}

// orgd's credentials never reach the server: it gets PATH, HOME, LANG and TZ, nothing else.
TEST(EmbeddedNatsServerTest, ServerGetsOnlyTheAllowListedEnvironment) {
  ScopedProcessEnv canaries{{{"NATS_TOKEN", "canary-nats-token"},
                             {"NATS_NKEY_SEED", "canary-nkey-seed"},
                             {"GITHUB_TOKEN", "canary-github-token"},
                             {"ORGD_MASTER_KEY", "canary-master-key"},
                             {"ORGD_REPO", "canary-repo"},
                             {"LANG", "C.UTF-8"}}};
  TempDir dir;
  EmbeddedNatsServer server(settings_in(dir));
  server.start();
  const auto entries = environ_of(server.pid());
  std::set<std::string> names;
  for (const auto& entry : entries) {
    EXPECT_EQ(entry.find("canary"), std::string::npos) << entry;
    names.insert(entry.substr(0, entry.find('=')));
  }
  EXPECT_EQ(names.count("LANG"), 1u);  // the allow-list still arrives
  for (const auto& name : names) {
    EXPECT_TRUE(name == "PATH" || name == "HOME" || name == "LANG" || name == "TZ") << name;
  }
}

// A server that dies is started again on its port and store, counted once; a client that was
// connected comes back by itself.
TEST(EmbeddedNatsServerTest, RestartsAServerThatDiedOnTheSamePort) {
  TempDir dir;
  auto settings = settings_in(dir);
  settings.restart_on_exit = true;
  settings.restart_backoff = 100ms;
  std::atomic<int> restarts{0};
  settings.on_restart = [&] { ++restarts; };
  EmbeddedNatsServer server(settings);
  server.start();
  const pid_t first = server.pid();
  const auto port = server.port();
  ASSERT_NE(port, 0);

  natsOptions* opts = nullptr;
  ASSERT_EQ(natsOptions_Create(&opts), NATS_OK);
  natsOptions_SetURL(opts, server.url().c_str());
  natsOptions_SetMaxReconnect(opts, -1);
  natsOptions_SetReconnectWait(opts, 50);
  std::atomic<int> reconnected{0};
  natsOptions_SetReconnectedCB(
      opts, [](natsConnection*, void* n) { ++*static_cast<std::atomic<int>*>(n); }, &reconnected);
  natsConnection* raw = nullptr;
  ASSERT_EQ(natsConnection_Connect(&raw, opts), NATS_OK);
  natsOptions_Destroy(opts);
  testing::NatsConnectionPtr client(raw);

  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(testing::wait_until(
      [&] { return restarts.load() == 1 && server.pid() != 0 && server.pid() != first; }, 30s))
      << "restarts " << restarts.load() << ", pid " << server.pid();
  EXPECT_EQ(server.port(), port);
  EXPECT_TRUE(server.running());
  EXPECT_TRUE(process_gone(first));
  ASSERT_TRUE(testing::wait_until([&] { return reconnected.load() >= 1; }, 20s));
  EXPECT_EQ(natsConnection_Status(client.get()), NATS_CONN_STATUS_CONNECTED);
  EXPECT_TRUE(testing::request(client.get(), "$JS.API.INFO", "", 5s).has_value());
  // The crash's log is kept next to the new one.
  EXPECT_TRUE(fs::exists(fs::path(server.log_path()) += ".1"));

  // Stopped on purpose: no restart.
  client.reset();
  server.stop();
  EXPECT_EQ(server.pid(), 0);
  EXPECT_EQ(restarts.load(), 1);
}

// A restart that fails is tried again (with the backoff) until one works; only that one counts.
TEST(EmbeddedNatsServerTest, FailedRestartsAreRetried) {
  TempDir dir;
  const fs::path refuse = dir / "refuse";    // while it exists, the "server" exits at once
  const fs::path refused = dir / "refused";  // written by each refused start
  const fs::path script = dir / "nats-server-wrapper";
  const auto real = find_executable(testing::nats_server_binary(), std::getenv("PATH"));
  ASSERT_TRUE(real.has_value());
  testing::write_file(script, "#!/bin/sh\nif [ -e " + refuse.string() + " ]; then echo x >> " +
                                  refused.string() + "; exit 1; fi\nexec " + *real + " \"$@\"\n");
  fs::permissions(script, fs::perms::owner_all);
  auto settings = settings_in(dir);
  settings.binary = script.string();
  settings.restart_on_exit = true;
  settings.restart_backoff = 50ms;
  settings.restart_backoff_max = 200ms;
  std::atomic<int> restarts{0};
  settings.on_restart = [&] { ++restarts; };
  EmbeddedNatsServer server(settings);
  server.start();
  const auto port = server.port();
  const pid_t first = server.pid();

  testing::write_file(refuse, "");
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // Two refused attempts: the first failure did not end the supervision.
  ASSERT_TRUE(testing::wait_until(
      [&] { return fs::exists(refused) && testing::read_file(refused).size() >= 4; }, 30s));
  EXPECT_EQ(restarts.load(), 0);
  fs::remove(refuse);
  ASSERT_TRUE(testing::wait_until([&] { return restarts.load() == 1; }, 30s));
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.port(), port);
  server.stop();
}

// The daemon's embedded server: killed with SIGKILL, it comes back on its port, the restart is
// counted in /metrics and orgd answers on it again.
TEST(EmbeddedNatsServerInDaemon, KilledServerIsRestartedCountedAndOrgdReconnects) {
  TempDir dir;
  // Port 0: the server picks one, and orgd connects to what it bound.
  const std::string url = "nats://127.0.0.1:0";
  const std::string yaml =
      "org: acme\n"
      "nats:\n  embedded: true\n  urls: [" +
      url +
      "]\n"
      "  data_dir: " +
      dir.str() +
      "\n"
      "  server_binary: " +
      testing::nats_server_binary() +
      "\n"
      "  connect_timeout: 2s\n  reconnect_wait: 100ms\n"
      "http:\n  listen: 127.0.0.1:0\n"
      "log:\n  level: warn\n"
      "repos:\n  api: {}\n";
  auto config = load_config_string(yaml, "test.yaml", Environment());
  Daemon daemon(config, DaemonOptions{}, Environment());
  daemon.start();
  ASSERT_TRUE(testing::wait_until([&] { return daemon.ready(); }, 20s));

  // The server writes <name>_<pid>.ports into its ports dir.
  pid_t first = 0;
  for (const auto& entry : fs::directory_iterator(dir / "nats" / "ports")) {
    const auto name = entry.path().filename().string();
    first = std::atoi(name.substr(name.rfind('_') + 1).c_str());
  }
  ASSERT_GT(first, 0);
  auto restarts = [&] {
    const auto metrics = testing::http_get(daemon.http_port(), "/metrics");
    if (!metrics) return std::string("(no /metrics)");
    const auto at = metrics->body.find("\norgd_embedded_server_restarts_total ");
    if (at == std::string::npos) return std::string("(no counter)");
    const auto start = at + std::string("\norgd_embedded_server_restarts_total ").size();
    return metrics->body.substr(start, metrics->body.find('\n', start) - start);
  };
  EXPECT_EQ(restarts(), "0");

  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(testing::wait_until([&] { return restarts() == "1"; }, 30s)) << restarts();
  // On the same port, with orgd connected again and serving.
  auto answered = [&] {
    try {
      auto client = testing::connect_client(daemon.nats_url());
      return testing::request(client.get(), "org.acme.api.status", "", 2s).has_value();
    } catch (const std::runtime_error&) {
      return false;
    }
  };
  EXPECT_TRUE(testing::wait_until([&] { return daemon.ready() && answered(); }, 30s));
  EXPECT_EQ(restarts(), "1");
  daemon.stop();
}

// Run by OrphanCheck in a child process of its own: starts an embedded server, reports its pid,
// then blocks until killed. Skipped in a normal run.
constexpr const char* kHelperEnv = "ORGD_TEST_EMBEDDED_HELPER_DIR";

TEST(EmbeddedNatsServerHelper, StartAndBlock) {
  const char* dir = std::getenv(kHelperEnv);
  if (dir == nullptr) GTEST_SKIP() << "helper of EmbeddedNatsServerTest.NeverOutlivesItsParent";
  EmbeddedServerSettings settings;
  settings.binary = testing::nats_server_binary();
  settings.port = 0;
  settings.store_dir = (fs::path(dir) / "nats").string();
  EmbeddedNatsServer server(settings);
  server.start();
  testing::write_file(fs::path(dir) / "pid.tmp", std::to_string(server.pid()));
  fs::rename(fs::path(dir) / "pid.tmp", fs::path(dir) / "pid");
  for (;;) ::pause();
}

TEST(EmbeddedNatsServerTest, NeverOutlivesItsParent) {
  // Orphans are re-parented to the nearest subreaper: make that this test process, so the
  // server is reaped here and its disappearance observed exactly.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  struct ResetSubreaper {
    ~ResetSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
  } reset;

  TempDir dir;
  char self[PATH_MAX] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0);
  testing::Subprocess helper({self, "--gtest_filter=EmbeddedNatsServerHelper.StartAndBlock"},
                             {{kHelperEnv, dir.str()}});
  ASSERT_TRUE(
      testing::wait_until([&] { return fs::exists(dir / "pid") || !helper.running(); }, 20s))
      << helper.describe();
  ASSERT_TRUE(fs::exists(dir / "pid")) << helper.describe();
  const pid_t server_pid = std::stoi(testing::read_file(dir / "pid"));
  ASSERT_GT(server_pid, 0);
  ASSERT_FALSE(process_gone(server_pid));

  helper.signal(SIGKILL);  // no destructor, no stop(): only the kernel can clean up
  ASSERT_EQ(helper.wait_for_exit(10s), -SIGKILL);
  EXPECT_TRUE(testing::wait_until([&] { return process_gone(server_pid); }, 10s))
      << "nats-server pid " << server_pid << " outlived its parent";
}

}  // namespace
}  // namespace orgd
