// End-to-end: the built orgd and orgctl binaries as child processes, configs written to temp
// dirs, a real nats-server (the fixture's, or orgd's embedded one) on loopback. orgd binds port
// 0 and tells the test what it bound (--ports-file), so no port is guessed. Everything waits on
// conditions with deadlines; nothing sleeps and hopes.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/support/http_client.hpp"
#include "tests/support/collector.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#ifndef ORGD_DAEMON_BINARY
#error "ORGD_DAEMON_BINARY must name the built orgd"
#endif
#ifndef ORGCTL_BINARY
#error "ORGCTL_BINARY must name the built orgctl"
#endif

namespace orgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::http_get;
using testing::NatsServer;
using testing::kOutsideEnv;
using testing::Subprocess;
using testing::SubprocessOptions;
using testing::TempDir;
using testing::Collector;
using testing::wait_until;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kOrg = "acme";
// How long a test waits for orgd to exit when the exit, not its speed, is what it checks. Exit
// within 5 s of SIGTERM is a contract: SigtermStopsCleanlyWithinFiveSeconds checks that one.
constexpr auto kExitDeadline = 20s;
// orgctl runs with --timeout 3 and must give up within it (exit 3); the rest is room for starting
// a process on a loaded 2-core machine.
constexpr auto kOrgctlGivesUpWithin = 3s + 5s;


std::string loopback_url(std::uint16_t port) { return "nats://127.0.0.1:" + std::to_string(port); }

std::string random_hex(std::size_t bytes) {
  std::random_device rd;
  std::string out;
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rd()) & 0xffU;
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xfU]);
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// orgd's configs

struct OrgdConfig {
  // The nats: block's content, indented by two spaces.
  std::string nats;
  // 0: orgd picks one and reports it in its ports file.
  std::uint16_t http_port = 0;
  std::string log_level = "info";
  // A whole config instead of the generated one ({http_port} is replaced).
  std::string yaml{};
};

// Three repos like the dev default: api (deployed locally, service http), web (depends on api),
// worker (depends on api, no services declared).
std::string orgd_yaml(const OrgdConfig& c) {
  return fmt::format(R"(org: {org}
nats:
{nats}http:
  listen: 127.0.0.1:{http_port}
log:
  level: {log_level}
  format: text
providers:
  local: {{type: local}}
repos:
  api:
    deploy:
      dev: {{provider: local, duration: 1s}}
    health: {{services: [http], ttl: 30s}}
  web:
    depends_on: [api]
    health: {{services: [http]}}
  worker:
    depends_on: [api]
)",
                     fmt::arg("org", kOrg), fmt::arg("nats", c.nats),
                     fmt::arg("http_port", c.http_port), fmt::arg("log_level", c.log_level));
}

std::string external_nats(const std::string& url) {
  return "  urls: [" + url + "]\n  connect_timeout: 2s\n  reconnect_wait: 100ms\n";
}

// The embedded server on a port of its choosing: orgd reports it in its ports file.
std::string embedded_nats(const fs::path& data_dir) {
  return "  embedded: true\n  urls: [" + loopback_url(0) + "]\n  data_dir: " + data_dir.string() +
         "\n";
}

// ---------------------------------------------------------------------------------------------
// Child processes

struct CommandResult {
  std::optional<int> status;  // nullopt: killed at the deadline
  std::string out;
  std::string err;
  std::chrono::milliseconds elapsed{0};

  std::string describe() const {
    return "status: " + (status ? testing::describe_exit(*status) : std::string("timed out")) +
           " after " + std::to_string(elapsed.count()) + " ms\n--- stdout ---\n" + out +
           "--- stderr ---\n" + err;
  }
};

CommandResult run_command(std::vector<std::string> argv,
                          std::map<std::string, std::string> env = {},
                          std::chrono::milliseconds deadline = 15s) {
  SubprocessOptions options;
  options.argv = std::move(argv);
  options.env = std::move(env);
  options.unset_env = kOutsideEnv;
  const auto started = SteadyClock::now();
  Subprocess p(std::move(options));
  CommandResult r;
  r.status = p.wait_for_exit(deadline);
  r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started);
  if (!r.status) p.kill();
  r.out = p.stdout_text();
  r.err = p.stderr_text();
  return r;
}

// orgctl against one NATS server for org acme. Connection flags go first: orgctl only accepts
// its global options before the subcommand (see OutputFlagAfterSubcommand).
CommandResult orgctl(const std::string& server, std::vector<std::string> args,
                     std::chrono::milliseconds deadline = 15s) {
  std::vector<std::string> argv = {ORGCTL_BINARY, "--server",  server, "--org",
                                   kOrg,          "--timeout", "3"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(std::move(argv), {}, deadline);
}

// One orgd child with its config in a temp dir. Logs go to the subprocess's files (orgd logs to
// stderr); HTTP on the port orgd reports in its ports file, so /readyz can be polled.
class OrgdProcess {
 public:
  OrgdProcess(OrgdConfig config, std::vector<std::string> extra_args = {},
              std::map<std::string, std::string> env = {})
      : dir_("orgd-e2e") {
    config_path_ = dir_ / "orgd.yaml";
    ports_path_ = dir_ / "ports.json";
    std::string yaml = config.yaml.empty() ? orgd_yaml(config) : config.yaml;
    const std::string placeholder = "{http_port}";
    for (auto at = yaml.find(placeholder); at != std::string::npos; at = yaml.find(placeholder)) {
      yaml.replace(at, placeholder.size(), std::to_string(config.http_port));
    }
    testing::write_file(config_path_, yaml);
    SubprocessOptions options;
    options.argv = {ORGD_DAEMON_BINARY, "--config", config_path_.string(), "--ports-file",
                    ports_path_.string()};
    options.argv.insert(options.argv.end(), extra_args.begin(), extra_args.end());
    options.env = std::move(env);
    options.unset_env = kOutsideEnv;
    options.cwd = dir_.path();
    process_ = std::make_unique<Subprocess>(std::move(options));
  }

  Subprocess& process() { return *process_; }
  // What orgd bound, from its ports file (waited for, while orgd runs); empty (port 0) if orgd
  // never wrote it, which fails the test.
  const testing::OrgdPorts& ports() {
    if (!ports_) {
      ports_ = testing::wait_for_ports_file(ports_path_, 30s, [&] { return process_->running(); });
      if (!ports_) {
        ADD_FAILURE() << "orgd wrote no ports file " << ports_path_ << "\n" << describe();
        ports_ = testing::OrgdPorts{};
      }
    }
    return *ports_;
  }
  std::uint16_t http_port() { return ports().http; }
  // The NATS URL orgd connects to: its embedded server's, with the port that server picked.
  std::string nats_url() { return ports().nats; }
  const fs::path& config_path() const { return config_path_; }
  std::string output() const { return process_->stdout_text() + process_->stderr_text(); }
  std::string describe() { return process_->describe(); }

  // /readyz says 200 (NATS connected, streams ready) and, given the URL of orgd's NATS, the API
  // answers too (/readyz alone can say ready a moment before the API subscriptions exist: see
  // ReadyzMeansTheApiAnswers). False if orgd exited or the deadline passed.
  bool wait_ready(const std::string& nats_url, std::chrono::milliseconds deadline = 30s) {
    const auto until = SteadyClock::now() + deadline;
    auto left = [&] {
      return std::max(
          std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now()), 0ms);
    };
    const std::uint16_t port = http_port();
    if (port == 0) return false;
    wait_until(
        [&] {
          if (!process_->running()) return true;
          auto r = http_get(port, "/readyz");
          return r && r->status == 200;
        },
        left(), 10ms);
    if (!process_->running()) return false;
    auto r = http_get(port, "/readyz");
    if (!r || r->status != 200) return false;
    if (nats_url.empty()) return true;
    auto client = testing::connect_client(nats_url);
    return wait_until(
        [&] {
          return testing::request(client.get(), std::string("org.") + kOrg + ".api.repos", "{}",
                                  500ms)
              .has_value();
        },
        left(), 10ms);
  }

 private:
  TempDir dir_;
  fs::path config_path_;
  fs::path ports_path_;
  std::optional<testing::OrgdPorts> ports_;
  std::unique_ptr<Subprocess> process_;
};

// ---------------------------------------------------------------------------------------------
// A raw nats.c publisher

void publish(natsConnection* conn, const std::string& subject, const std::string& data) {
  ASSERT_EQ(
      natsConnection_Publish(conn, subject.c_str(), data.data(), static_cast<int>(data.size())),
      NATS_OK);
  ASSERT_EQ(natsConnection_Flush(conn), NATS_OK);
}

// ---------------------------------------------------------------------------------------------
// Finding the embedded nats-server among the machine's processes

std::string read_proc(pid_t pid, const char* what) {
  std::string text = testing::read_file(fs::path("/proc") / std::to_string(pid) / what);
  for (auto& c : text) {
    if (c == '\0') c = ' ';
  }
  return text;
}

// A process counts as alive while it exists and is not a zombie (a zombie waits for its new
// parent to reap it, which the test does not control).
bool alive(pid_t pid) {
  const std::string stat = read_proc(pid, "stat");
  if (stat.empty()) return false;
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// The pids of live nats-servers whose command line mentions `needle` (a test's temp dir).
std::vector<pid_t> nats_servers_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    const std::string cmdline = read_proc(pid, "cmdline");
    if (contains(cmdline, "nats-server") && contains(cmdline, needle) && alive(pid)) {
      out.push_back(pid);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// (1) health in, status out; (2) bad input rejected

class OrgdAgainstNats : public ::testing::Test {
 protected:
  NatsServer server;
};

TEST_F(OrgdAgainstNats, HealthReportedWithOrgctlShowsInStatusAndRepos) {
  OrgdProcess orgd({external_nats(server.url())});
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();

  auto reported = orgctl(server.url(), {"health", "report", "api", "http", "--status", "ok",
                                        "--ttl", "30", "--version", "1.4.2"});
  ASSERT_EQ(reported.status, 0) << reported.describe();
  EXPECT_TRUE(contains(reported.out, "reported api/http ok")) << reported.describe();

  auto json_status = orgctl(server.url(), {"-o", "json", "status"});
  ASSERT_EQ(json_status.status, 0) << json_status.describe();
  const auto status = nlohmann::json::parse(json_status.out, nullptr, false);
  ASSERT_TRUE(status.is_object()) << json_status.describe();
  EXPECT_EQ(status.value("org", ""), kOrg);
  EXPECT_TRUE(status.contains("generatedAt")) << status.dump();
  std::map<std::string, nlohmann::json> repos;
  for (const auto& r : status["repos"]) repos[r.value("name", "")] = r;
  ASSERT_EQ(repos.size(), 3U) << status.dump();
  EXPECT_EQ(repos["api"].value("health", ""), "ok") << status.dump();
  EXPECT_EQ(repos["web"].value("health", ""), "unknown") << status.dump();
  EXPECT_EQ(repos["worker"].value("health", ""), "unknown") << status.dump();
  ASSERT_TRUE(repos["api"]["services"].is_array() && !repos["api"]["services"].empty());
  const auto& http = repos["api"]["services"][0];
  EXPECT_EQ(http.value("name", ""), "http");
  EXPECT_EQ(http.value("status", ""), "ok");
  EXPECT_EQ(http.value("version", ""), "1.4.2");

  auto table = orgctl(server.url(), {"status"});
  ASSERT_EQ(table.status, 0) << table.describe();
  bool api_ok = false;
  for (const auto& line : lines_of(table.out)) {
    if (line.rfind("api ", 0) == 0) api_ok = contains(line, " ok ") && contains(line, "http=ok");
  }
  EXPECT_TRUE(api_ok) << "no 'api ... ok ... http=ok' row:\n" << table.out;
  EXPECT_TRUE(contains(table.out, "web ") && contains(table.out, "worker ")) << table.describe();
  EXPECT_TRUE(contains(table.out, "unknown")) << table.describe();

  auto one = orgctl(server.url(), {"-o", "json", "status", "api"});
  ASSERT_EQ(one.status, 0) << one.describe();
  const auto repo = nlohmann::json::parse(one.out, nullptr, false);
  EXPECT_EQ(repo.value("name", ""), "api") << one.describe();
  EXPECT_EQ(repo.value("health", ""), "ok") << one.describe();

  auto list = orgctl(server.url(), {"repos"});
  ASSERT_EQ(list.status, 0) << list.describe();
  bool web_depends_on_api = false;
  for (const auto& line : lines_of(list.out)) {
    if (line.rfind("web ", 0) == 0) web_depends_on_api = contains(line, "api");
  }
  EXPECT_TRUE(web_depends_on_api) << list.describe();
  EXPECT_TRUE(contains(list.out, "worker")) << list.describe();
}

TEST_F(OrgdAgainstNats, BadInputIsDeadLetteredAndOrgdKeepsAnswering) {
  OrgdProcess orgd({external_nats(server.url())});
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
  auto client = testing::connect_client(server.url());
  Collector dlq(client.get(), std::string("org.") + kOrg + ".dlq.>");

  publish(client.get(), "org.acme.health.api.http", "{nope");
  publish(client.get(), "org.acme.health.nope.http", R"({"status":"ok","ttlSeconds":30})");
  ASSERT_TRUE(wait_until([&] { return dlq.size() >= 2; }, 20s))
      << "dead letters seen: " << dlq.size() << "\n"
      << orgd.describe();

  std::map<std::string, BusMessage> by_subject;
  for (const auto& m : dlq.messages()) by_subject[m.subject] = m;
  ASSERT_EQ(by_subject.count("org.acme.dlq.health.api.http"), 1U);
  ASSERT_EQ(by_subject.count("org.acme.dlq.health.nope.http"), 1U);
  auto malformed = by_subject["org.acme.dlq.health.api.http"];
  EXPECT_EQ(malformed.data, "{nope") << "the dead letter carries the input as received";
  EXPECT_FALSE(malformed.header("Orgd-Dlq-Reason").value_or("").empty());
  EXPECT_EQ(malformed.header("Orgd-Dlq-Code").value_or(""), "400");
  EXPECT_EQ(malformed.header("Orgd-Dlq-Subject").value_or(""), "org.acme.health.api.http");
  auto unknown = by_subject["org.acme.dlq.health.nope.http"];
  EXPECT_TRUE(contains(unknown.header("Orgd-Dlq-Reason").value_or(""), "nope"))
      << unknown.header("Orgd-Dlq-Reason").value_or("");

  // orgd still answers, and counted what it rejected.
  auto status = orgctl(server.url(), {"-o", "json", "status"});
  ASSERT_EQ(status.status, 0) << status.describe();
  EXPECT_FALSE(contains(status.out, "\"nope\"")) << "a rejected repo must not appear:\n"
                                                 << status.out;
  auto metrics = http_get(orgd.http_port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_TRUE(contains(metrics->body, "orgd_messages_rejected_total{")) << metrics->body;

  auto missing = orgctl(server.url(), {"status", "nope"});
  EXPECT_EQ(missing.status, 1) << missing.describe();
  EXPECT_TRUE(contains(missing.err, "unknown repo 'nope'")) << missing.describe();
  EXPECT_TRUE(missing.out.empty()) << missing.describe();
  EXPECT_TRUE(orgd.process().running()) << orgd.describe();
}

// ---------------------------------------------------------------------------------------------
// (3) SIGTERM; (8) JSON logs

TEST_F(OrgdAgainstNats, SigtermStopsCleanlyWithinFiveSeconds) {
  OrgdProcess orgd({external_nats(server.url())});
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
  const auto sent = SteadyClock::now();
  ASSERT_TRUE(orgd.process().signal(SIGTERM));
  const auto status = orgd.process().wait_for_exit(5s);
  ASSERT_TRUE(status.has_value()) << "orgd still runs 5 s after SIGTERM\n" << orgd.describe();
  EXPECT_EQ(*status, 0) << orgd.describe();
  EXPECT_LT(SteadyClock::now() - sent, 5s);
  const auto logs = orgd.output();
  EXPECT_TRUE(contains(logs, "SIGTERM")) << logs;
  EXPECT_TRUE(contains(lines_of(logs).back(), "stopped")) << "last line should say it stopped:\n"
                                                          << logs;
  // A requested stop is not an incident: nothing at warning level or above once it began
  // (text lines read "<time> <level> [<logger>] <message>").
  bool stopping = false;
  for (const auto& line : lines_of(logs)) {
    if (contains(line, "SIGTERM")) stopping = true;
    if (!stopping) continue;
    const auto first = line.find(' ');
    const auto level = line.substr(first + 1, line.find(' ', first + 1) - first - 1);
    EXPECT_TRUE(level != "warning" && level != "error" && level != "critical")
        << "clean shutdown logged: " << line;
  }
}

TEST_F(OrgdAgainstNats, JsonLogFormatWritesOneJsonObjectPerLine) {
  OrgdProcess orgd({external_nats(server.url())}, {"--log-format", "json"});
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
  // A rejection is logged with the input's subject in the message: quotes and backslashes must
  // come out escaped.
  auto client = testing::connect_client(server.url());
  Collector dlq(client.get(), "org.acme.dlq.>");
  publish(client.get(), R"(org.acme.health.we"ird\x.http)", R"({"status":"ok"})");
  ASSERT_TRUE(wait_until([&] { return dlq.size() == 1; }, 20s)) << orgd.describe();
  ASSERT_TRUE(orgd.process().signal(SIGTERM));
  ASSERT_EQ(orgd.process().wait_for_exit(kExitDeadline), 0) << orgd.describe();

  const auto lines = lines_of(orgd.output());
  ASSERT_GE(lines.size(), 3U) << orgd.output();
  bool saw_rejection = false;
  bool saw_stopped = false;
  for (const auto& line : lines) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
    ASSERT_TRUE(j.contains("level") && j.contains("msg") && j.contains("ts")) << line;
    const auto msg = j.value("msg", "");
    if (contains(msg, R"(we"ird\x)")) saw_rejection = true;
    if (msg == "stopped") saw_stopped = true;
  }
  EXPECT_TRUE(saw_rejection) << "the rejection's message should carry the subject intact\n"
                             << orgd.output();
  EXPECT_TRUE(saw_stopped) << orgd.output();
}

// A clean start against a healthy server should log no errors. The bug this guards against is
// a race, so orgd is started up to six times (the first start that logs an error fails).
TEST_F(OrgdAgainstNats, CleanStartLogsNoErrors) {
  for (int attempt = 1; attempt <= 6; ++attempt) {
    OrgdProcess orgd({external_nats(server.url())}, {"--log-format", "json"});
    const auto started = SteadyClock::now();
    ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
    const auto to_ready = SteadyClock::now() - started;
    std::string errors;
    for (const auto& line : lines_of(orgd.output())) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const auto level = j.is_object() ? j.value("level", "") : std::string();
      if (level == "error" || level == "critical") errors += line + "\n";
    }
    ASSERT_TRUE(errors.empty())
        << "start " << attempt << ": orgd logged errors during a clean start (ready after "
        << std::chrono::duration_cast<std::chrono::milliseconds>(to_ready).count() << " ms).\n"
        << "'creating stream ...: Invalid Argument (error code 0)' means ensure_streams() ran "
           "with a null jsCtx: the connection was reported connected before its JetStream "
           "context existed (daemon/bus/nats_connection.cpp), and streams only came on the 1 s "
           "retry.\n"
        << errors;
    ASSERT_TRUE(orgd.process().signal(SIGTERM));
    ASSERT_EQ(orgd.process().wait_for_exit(kExitDeadline), 0) << orgd.describe();
  }
}

// /readyz is what an orchestrator routes traffic on: once it says 200, the API must answer. A
// long-lived org has many stored service states, which makes the start-up's health rebuild
// (between "streams ready" and "subscribed") long enough to see.
TEST_F(OrgdAgainstNats, ReadyzMeansTheApiAnswers) {
  {
    OrgdProcess first({external_nats(server.url())});
    ASSERT_TRUE(first.wait_ready(server.url())) << first.describe();
    ASSERT_TRUE(first.process().signal(SIGTERM));
    ASSERT_EQ(first.process().wait_for_exit(kExitDeadline), 0) << first.describe();
  }
  constexpr int kStates = 20000;
  auto client = testing::connect_client(server.url());
  for (int i = 0; i < kStates; ++i) {
    const std::string repo = "gone-" + std::to_string(i);
    const std::string state =
        R"({"repo":")" + repo + R"(","service":"http","status":"ok","ttlSeconds":30})";
    const std::string subject = "org.acme.state.health." + repo + ".http";
    ASSERT_EQ(natsConnection_Publish(client.get(), subject.c_str(), state.data(),
                                     static_cast<int>(state.size())),
              NATS_OK);
  }
  ASSERT_EQ(natsConnection_Flush(client.get()), NATS_OK);
  ASSERT_TRUE(wait_until(
      [&] {
        auto info = testing::request(client.get(), "$JS.API.STREAM.INFO.ORGD_HEALTH", "", 1s);
        if (!info) return false;
        const auto j = nlohmann::json::parse(*info, nullptr, false);
        return j.is_object() && j["state"].value("messages", 0) >= kStates;
      },
      30s))
      << "ORGD_HEALTH did not store the states";

  OrgdProcess orgd({external_nats(server.url())});
  const std::uint16_t http_port = orgd.http_port();
  ASSERT_TRUE(wait_until(
      [&] {
        if (!orgd.process().running()) return true;
        auto r = http_get(http_port, "/readyz");
        return r && r->status == 200;
      },
      30s, 1ms))
      << orgd.describe();
  ASSERT_TRUE(orgd.process().running()) << orgd.describe();
  natsMsg* reply = nullptr;
  const natsStatus s =
      natsConnection_RequestString(&reply, client.get(), "org.acme.api.repos", "{}", 10000);
  if (reply != nullptr) natsMsg_Destroy(reply);
  EXPECT_EQ(s, NATS_OK)
      << "/readyz said 200 but P.api.repos got: " << natsStatus_GetText(s) << ".\n"
      << "Daemon::ready() must hold only once the P.api.* subscriptions exist (after the "
         "health rebuild, here of "
      << kStates << " stored states, and subscribe_all()), not as soon as the streams are.";
}

// SIGHUP re-reads the config file: a new repo appears at once; a broken file is refused, counted,
// and the running config stays.
TEST_F(OrgdAgainstNats, SighupReloadsTheConfigAndKeepsItWhenTheNewOneIsBroken) {
  OrgdConfig config{external_nats(server.url())};
  OrgdProcess orgd(config);
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
  auto repos_listed = [&] {
    auto r = orgctl(server.url(), {"repos", "-o", "json"});
    return r.status == 0 ? r.out : std::string();
  };
  ASSERT_FALSE(contains(repos_listed(), "\"billing\""));

  std::string yaml = testing::read_file(orgd.config_path());
  testing::write_file(orgd.config_path(), yaml + "  billing:\n    depends_on: [api]\n");
  ASSERT_TRUE(orgd.process().signal(SIGHUP));
  EXPECT_TRUE(wait_until([&] { return contains(repos_listed(), "\"billing\""); }, 20s))
      << orgd.describe();

  testing::write_file(orgd.config_path(), "org: acme\nrepos: [not, a, map]\n");
  ASSERT_TRUE(orgd.process().signal(SIGHUP));
  EXPECT_TRUE(wait_until(
      [&] {
        auto m = http_get(orgd.http_port(), "/metrics");
        return m && contains(m->body, "orgd_config_reloads_total{result=\"error\"} 1");
      },
      20s))
      << orgd.describe();
  EXPECT_TRUE(orgd.process().running());
  EXPECT_TRUE(contains(repos_listed(), "\"billing\"")) << "the running config must stay";
  EXPECT_TRUE(contains(orgd.output(), "config reload rejected")) << orgd.output();
}

// ---------------------------------------------------------------------------------------------
// (4) --check-config

TEST(CheckConfig, GoodFileExitsZeroBrokenFileExitsTwoNamingFileLineAndKey) {
  TempDir dir("orgd-e2e-config");
  const auto good = dir / "good.yaml";
  testing::write_file(good, orgd_yaml({external_nats("nats://127.0.0.1:4222"), 8080}));
  auto ok = run_command({ORGD_DAEMON_BINARY, "--check-config", "--config", good.string()});
  EXPECT_EQ(ok.status, 0) << ok.describe();
  EXPECT_TRUE(contains(ok.out, "valid")) << ok.describe();

  const auto broken = dir / "broken.yaml";
  testing::write_file(broken,
                      "org: acme\n"                        // 1
                      "nats:\n"                            // 2
                      "  urls: [nats://127.0.0.1:4222]\n"  // 3
                      "  bogus_key: 1\n"                   // 4
                      "log:\n"                             // 5
                      "  level: [info]\n");                // 6
  auto bad = run_command({ORGD_DAEMON_BINARY, "--check-config", "--config", broken.string()});
  EXPECT_EQ(bad.status, 2) << bad.describe();
  const auto all = bad.out + bad.err;
  EXPECT_TRUE(contains(all, broken.string() + ":4: nats.bogus_key")) << bad.describe();
  EXPECT_TRUE(contains(all, broken.string() + ":6: log.level")) << bad.describe();

  auto absent = run_command(
      {ORGD_DAEMON_BINARY, "--check-config", "--config", (dir / "absent.yaml").string()});
  EXPECT_EQ(absent.status, 2) << absent.describe();
  EXPECT_TRUE(contains(absent.out + absent.err, "absent.yaml")) << absent.describe();
}

// ---------------------------------------------------------------------------------------------
// (5) embedded mode; (6) SIGKILL leaves no orphan

class EmbeddedOrgd : public ::testing::Test {
 protected:
  void SetUp() override {
    orgd = std::make_unique<OrgdProcess>(OrgdConfig{embedded_nats(data_dir.path() / "data")});
    ASSERT_NE(orgd->nats_url(), loopback_url(0)) << "the ports file should name the bound port";
    ASSERT_TRUE(orgd->wait_ready(url(), 30s)) << orgd->describe();
    ASSERT_TRUE(wait_until([&] { return !nats_servers_mentioning(data_dir.str()).empty(); }, 20s))
        << "no nats-server process mentions " << data_dir.str();
    const auto pids = nats_servers_mentioning(data_dir.str());
    ASSERT_EQ(pids.size(), 1U);
    nats_pid = pids[0];
  }

  std::string url() const { return orgd->nats_url(); }

  TempDir data_dir{"orgd-e2e-embedded"};
  std::unique_ptr<OrgdProcess> orgd;
  pid_t nats_pid = 0;
};

TEST_F(EmbeddedOrgd, ServesOrgctlAndSigtermStopsItsNatsServer) {
  EXPECT_TRUE(fs::exists(data_dir.path() / "data")) << "data_dir not used";
  auto reported = orgctl(url(), {"health", "report", "worker", "worker", "--status", "degraded"});
  ASSERT_EQ(reported.status, 0) << reported.describe();
  auto status = orgctl(url(), {"-o", "json", "status", "worker"});
  ASSERT_EQ(status.status, 0) << status.describe();
  EXPECT_EQ(nlohmann::json::parse(status.out, nullptr, false).value("health", ""), "degraded")
      << status.describe();

  ASSERT_TRUE(orgd->process().signal(SIGTERM));
  ASSERT_EQ(orgd->process().wait_for_exit(kExitDeadline), 0) << orgd->describe();
  EXPECT_TRUE(wait_until([&] { return !alive(nats_pid); }, 20s))
      << "embedded nats-server pid " << nats_pid << " outlived orgd's SIGTERM";
  EXPECT_TRUE(contains(orgd->output(), "stopped")) << orgd->output();
}

TEST_F(EmbeddedOrgd, SigkillOfOrgdTakesItsNatsServerDown) {
  ASSERT_TRUE(orgd->process().signal(SIGKILL));
  ASSERT_EQ(orgd->process().wait_for_exit(kExitDeadline), -SIGKILL) << orgd->describe();
  EXPECT_TRUE(wait_until([&] { return !alive(nats_pid); }, 20s))
      << "embedded nats-server pid " << nats_pid << " is an orphan after SIGKILL of orgd";
  // And the port is free again: nothing answers there.
  auto r = orgctl(url(), {"status"});
  EXPECT_EQ(r.status, 3) << r.describe();
}

// `make dev`, then `orgctl deploy --all --env dev --wait`: the embedded default config as
// shipped, on free ports and a temp data dir.
class DevDefaultOrgd : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string yaml = testing::read_file(fs::path(ORGD_SOURCE_DIR) / "config/orgd.dev.yaml");
    // Every occurrence (the file's comments name them too).
    auto replace = [&](const std::string& from, const std::string& to) {
      ASSERT_NE(yaml.find(from), std::string::npos) << from << " not in config/orgd.dev.yaml";
      for (auto at = yaml.find(from); at != std::string::npos; at = yaml.find(from, at + to.size())) {
        yaml.replace(at, from.size(), to);
      }
    };
    replace("127.0.0.1:4222", "127.0.0.1:0");
    replace("127.0.0.1:8080", "127.0.0.1:0");
    replace("data_dir: .orgd", "data_dir: " + (data_dir.path() / "data").string());
    OrgdConfig config;
    config.yaml = yaml;
    orgd = std::make_unique<OrgdProcess>(config);
    ASSERT_TRUE(orgd->wait_ready("", 30s)) << orgd->describe();
    ASSERT_TRUE(wait_until(
        [&] {
          auto client = testing::connect_client(url());
          return testing::request(client.get(), "org.demo.api.repos", "{}", 500ms).has_value();
        },
        20s));
  }

  CommandResult orgctl_demo(std::vector<std::string> args,
                            std::chrono::milliseconds deadline = 15s) {
    std::vector<std::string> argv = {ORGCTL_BINARY, "--server", url(), "--org", "demo"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(std::move(argv), {}, deadline);
  }

  std::string url() const { return orgd->nats_url(); }

  TempDir data_dir{"orgd-e2e-dev"};
  std::unique_ptr<OrgdProcess> orgd;
};

TEST_F(DevDefaultOrgd, OrgctlDeploysEveryRepoAndWaitsForTheEnd) {
  auto plan = orgctl_demo({"deploy", "--all", "--env", "dev", "--dry-run"});
  ASSERT_EQ(plan.status, 0) << plan.describe();
  EXPECT_TRUE(contains(plan.out, "wave 1: api")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "wave 2: web, worker")) << plan.out;

  auto deployed = orgctl_demo({"deploy", "--all", "--env", "dev", "--ref", "v1.2.3", "--wait"}, 60s);
  ASSERT_EQ(deployed.status, 0) << deployed.describe();
  EXPECT_TRUE(contains(deployed.out, "finished: succeeded")) << deployed.out;
  for (const char* repo : {"api", "web", "worker"}) {
    EXPECT_TRUE(fs::exists(data_dir.path() / "data" / "local" / repo / "dev" / "executions.log"))
        << repo;
  }
  auto status = orgctl_demo({"status"});
  ASSERT_EQ(status.status, 0) << status.describe();
  EXPECT_TRUE(contains(status.out, "dev: succeeded")) << status.out;
  auto list = orgctl_demo({"-o", "json", "deploy", "list", "--env", "dev"});
  ASSERT_EQ(list.status, 0) << list.describe();
  const auto deploys = nlohmann::json::parse(list.out, nullptr, false);
  ASSERT_TRUE(deploys.contains("deploys")) << list.out;
  ASSERT_EQ(deploys["deploys"].size(), 1U) << list.out;
  EXPECT_EQ(deploys["deploys"][0].value("state", ""), "succeeded");
  EXPECT_EQ(deploys["deploys"][0].value("ref", ""), "v1.2.3");
}

TEST_F(OrgdAgainstNats, OrgctlDeployWaitExitsOneWhenTheDeployFails) {
  OrgdConfig config{external_nats(server.url())};
  config.yaml = "org: acme\nnats:\n" + external_nats(server.url()) +
                "http: {listen: '127.0.0.1:{http_port}'}\n"
                "deploy: {health_gate: false}\n"
                "providers: {local: {type: local}, shell: {type: exec}}\n"
                "repos:\n"
                "  api: {deploy: {dev: {provider: shell, command: 'echo migrating; exit 4'}}}\n"
                "  web: {depends_on: [api], deploy: {dev: {provider: local, duration: 0s}}}\n";
  OrgdProcess failing(config);
  ASSERT_TRUE(failing.wait_ready(server.url(), 20s)) << failing.describe();
  auto r = orgctl(server.url(), {"deploy", "api", "web", "--env", "dev", "--wait"}, 60s);
  EXPECT_EQ(r.status, 1) << r.describe();
  EXPECT_TRUE(contains(r.out, "finished: failed")) << r.out;
  EXPECT_TRUE(contains(r.out, "migrating")) << r.out;
}

// An org larger than one NATS message: the server carries at most 128 KiB, the whole status of
// 1,500 repos is well over that, a page of 500 is not. orgctl walks the pages and shows every
// repo once, as one reply used to look; P.api.status without paging answers the first page and
// says where the next starts.
TEST(OrgdLargeOrg, OrgctlWalksThePagesOfStatusAndRepos) {
  NatsServer::Options options;
  options.extra_config = "max_payload: 131072\n";
  NatsServer server(options);
  constexpr int kRepos = 1500;
  OrgdConfig config{external_nats(server.url())};
  config.yaml = "org: acme\nnats:\n" + external_nats(server.url()) +
                "http: {listen: '127.0.0.1:{http_port}'}\nlog: {level: warn}\nrepos:\n";
  for (int i = 0; i < kRepos; ++i) {
    config.yaml += fmt::format("  service-{:04}: {{health: {{services: [http, worker]}}}}\n", i);
  }
  OrgdProcess orgd(config);
  ASSERT_TRUE(orgd.wait_ready(server.url(), 30s)) << orgd.describe();

  auto full = http_get(orgd.http_port(), "/status");
  ASSERT_TRUE(full.has_value());
  ASSERT_GT(full->body.size(), 131072U) << "the org must not fit one message";

  auto json_status = orgctl(server.url(), {"-o", "json", "status"}, 60s);
  ASSERT_EQ(json_status.status, 0) << json_status.describe();
  const auto status = nlohmann::json::parse(json_status.out, nullptr, false);
  ASSERT_TRUE(status.is_object()) << json_status.err;
  ASSERT_EQ(status["repos"].size(), static_cast<std::size_t>(kRepos));
  std::set<std::string> names;
  for (const auto& r : status["repos"]) names.insert(r.value("name", ""));
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kRepos)) << "each repo once";
  EXPECT_EQ(*names.begin(), "service-0000");
  EXPECT_EQ(*names.rbegin(), "service-1499");
  EXPECT_EQ(status.value("nextCursor", "?"), "") << "one reply, no page after it";

  auto table = orgctl(server.url(), {"status"}, 60s);
  ASSERT_EQ(table.status, 0) << table.describe();
  EXPECT_TRUE(contains(table.out, "service-0000 ") && contains(table.out, "service-1499 "));
  auto repos = orgctl(server.url(), {"repos"}, 60s);
  ASSERT_EQ(repos.status, 0) << repos.describe();
  EXPECT_EQ(lines_of(repos.out).size(), static_cast<std::size_t>(kRepos) + 1) << "a header and a "
                                                                                  "row per repo";

  // A bare request gets the first page and the cursor of the next.
  auto client = testing::connect_client(server.url());
  natsMsg* reply = nullptr;
  ASSERT_EQ(natsConnection_RequestString(&reply, client.get(), "org.acme.api.status", "", 5000),
            NATS_OK);
  const auto first = nlohmann::json::parse(
      std::string(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply))));
  natsMsg_Destroy(reply);
  EXPECT_EQ(first["repos"].size(), 500U);
  EXPECT_EQ(first.value("totalRepos", 0), kRepos);
  EXPECT_EQ(first.value("nextCursor", ""), "service-0499");
}

// A deploy whose record is over what one reply carries (the server's max_payload is 64 KiB, the
// JSON of 400 finished steps is well over it): P.api.deploy.get pages its steps, a page too big
// is a 413 and orgctl halves its pages until they fit; --wait follows the deploy to its end and
// `deploy get` shows every step.
// What a subscriber on a KV bucket's subjects sees written: messages, bytes, the largest one.
struct KvCensus {
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::size_t> largest{0};

  static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<KvCensus*>(closure);
    const auto size = static_cast<std::size_t>(natsMsg_GetDataLength(msg));
    self->messages.fetch_add(1);
    self->bytes.fetch_add(size);
    std::size_t seen = self->largest.load();
    while (size > seen && !self->largest.compare_exchange_weak(seen, size)) {
    }
    natsMsg_Destroy(msg);
  }
};

// A deploy whose record, stored whole, would be larger than the server's max_payload (1,000
// repos at about 90 bytes a step against 64 KiB): it runs, because every key of it is small.
TEST(OrgdLargeOrg, OrgctlFollowsAndShowsADeployLargerThanOneReply) {
  NatsServer::Options options;
  options.extra_config = "max_payload: 65536\n";
  NatsServer server(options);
  constexpr int kRepos = 1000;
  OrgdConfig config{external_nats(server.url())};
  config.yaml = "org: acme\nnats:\n" + external_nats(server.url()) +
                "http: {listen: '127.0.0.1:{http_port}'}\nlog: {level: warn}\n"
                "deploy: {health_gate: false}\nproviders: {local: {type: local}}\nrepos:\n";
  for (int i = 0; i < kRepos; ++i) {
    config.yaml +=
        fmt::format("  service-{:04}: {{deploy: {{dev: {{provider: local, duration: 0s}}}}}}\n", i);
  }
  OrgdProcess orgd(config);
  ASSERT_TRUE(orgd.wait_ready(server.url(), 30s)) << orgd.describe();
  auto watcher = testing::connect_client(server.url());
  KvCensus census;
  natsSubscription* raw = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(&raw, watcher.get(), "$KV.orgd_deploys.>",
                                     &KvCensus::on_message, &census),
            NATS_OK);
  ASSERT_EQ(natsSubscription_SetPendingLimits(raw, -1, -1), NATS_OK);
  ASSERT_EQ(natsConnection_Flush(watcher.get()), NATS_OK);

  auto deployed = orgctl(server.url(), {"deploy", "--all", "--env", "dev", "--wait"}, 240s);
  ASSERT_EQ(deployed.status, 0) << deployed.describe();
  EXPECT_TRUE(contains(deployed.out, "finished: succeeded")) << deployed.out;
  std::string id;
  for (const auto& line : lines_of(deployed.out)) {
    // "deploy <id> to dev (...)"
    if (line.rfind("deploy ", 0) == 0 && contains(line, " to dev")) {
      id = line.substr(7, line.find(' ', 7) - 7);
    }
  }
  ASSERT_FALSE(id.empty()) << deployed.out;

  auto got = orgctl(server.url(), {"-o", "json", "deploy", "get", id}, 60s);
  ASSERT_EQ(got.status, 0) << got.describe();
  const auto record = nlohmann::json::parse(got.out, nullptr, false);
  ASSERT_TRUE(record.is_object()) << got.err;
  ASSERT_GT(got.out.size(), 65536U) << "the record must not fit one reply";
  ASSERT_EQ(record["steps"].size(), static_cast<std::size_t>(kRepos));
  std::set<std::string> repos;
  for (const auto& step : record["steps"]) {
    repos.insert(step.value("repo", ""));
    EXPECT_EQ(step.value("state", ""), "succeeded");
  }
  EXPECT_EQ(repos.size(), static_cast<std::size_t>(kRepos));
  ASSERT_EQ(natsConnection_Flush(watcher.get()), NATS_OK);
  natsSubscription_Unsubscribe(raw);
  natsSubscription_Destroy(raw);
  // Every record write is a step or a header: none near the 64 KiB a whole record needs, and
  // the deploy's bytes a few hundred a repo, not tens of kilobytes.
  EXPECT_GT(census.messages.load(), static_cast<std::uint64_t>(2 * kRepos));
  EXPECT_LT(census.largest.load(), 4096U);
  EXPECT_LT(census.bytes.load() / kRepos, 2048U) << census.bytes.load() << " bytes written";

  // What a client without paging gets: the first page is too big, and it is told so.
  auto client = testing::connect_client(server.url());
  natsMsg* reply = nullptr;
  const std::string request = R"({"deployId":")" + id + R"("})";
  ASSERT_EQ(natsConnection_RequestString(&reply, client.get(), "org.acme.api.deploy.get",
                                         request.c_str(), 5000),
            NATS_OK);
  const char* code = nullptr;
  ASSERT_EQ(natsMsgHeader_Get(reply, "Nats-Service-Error-Code", &code), NATS_OK);
  EXPECT_STREQ(code, "413");
  const std::string body(natsMsg_GetData(reply),
                         static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  EXPECT_TRUE(contains(body, "page_size")) << body;

  auto list = orgctl(server.url(), {"deploy", "list"}, 30s);
  ASSERT_EQ(list.status, 0) << list.describe();
  EXPECT_TRUE(contains(list.out, "+990 more")) << list.out;
}

// ---------------------------------------------------------------------------------------------
// (7) orgctl against nothing

TEST(OrgctlUnreachable, NoServerExitsThreeWithAClearError) {
  const testing::RefusingPort nobody;
  auto r = orgctl(loopback_url(nobody.port()), {"status"}, 10s);
  ASSERT_TRUE(r.status.has_value()) << r.describe();
  EXPECT_EQ(*r.status, 3) << r.describe();
  EXPECT_LT(r.elapsed, kOrgctlGivesUpWithin) << r.describe();
  EXPECT_TRUE(contains(r.err, "cannot connect")) << r.describe();
  EXPECT_TRUE(contains(r.err, "127.0.0.1")) << r.describe();
}

TEST_F(OrgdAgainstNats, OrgctlWithoutOrgdExitsThreeNamingOrgd) {
  auto r = orgctl(server.url(), {"status"}, 10s);
  ASSERT_TRUE(r.status.has_value()) << r.describe();
  EXPECT_EQ(*r.status, 3) << r.describe();
  EXPECT_LT(r.elapsed, kOrgctlGivesUpWithin) << r.describe();
  EXPECT_TRUE(contains(r.err, "orgd did not answer")) << r.describe();
}

// ---------------------------------------------------------------------------------------------
// (9) the NATS token never shows

TEST(SecretCanary, TokenFromEnvironmentNeverAppearsInLogsOrMetrics) {
  const std::string canary = "canary" + random_hex(16);
  testing::NatsServerOptions options;
  options.extra_config = "authorization {\n  token: \"" + canary + "\"\n}\n";
  NatsServer server(options);
  const std::string authed_url = "nats://" + canary + "@127.0.0.1:" + std::to_string(server.port());
  const std::string nats = "  urls: [" + server.url() +
                           "]\n  token_env: ORGD_TEST_TOKEN\n  connect_timeout: 2s\n"
                           "  reconnect_wait: 100ms\n";

  // Without the variable orgd refuses to start and names it.
  {
    OrgdProcess orgd({nats});
    ASSERT_TRUE(orgd.process().wait_for_exit(kExitDeadline).has_value()) << orgd.describe();
    EXPECT_NE(orgd.process().exit_status(), 0);
    EXPECT_TRUE(contains(orgd.output(), "ORGD_TEST_TOKEN")) << orgd.output();
  }

  OrgdProcess orgd({nats, 0, "debug"}, {"--log-level", "debug"}, {{"ORGD_TEST_TOKEN", canary}});
  ASSERT_TRUE(orgd.wait_ready(authed_url)) << orgd.describe();
  auto reported = orgctl(authed_url, {"health", "report", "api", "http", "--status", "ok"});
  ASSERT_EQ(reported.status, 0) << reported.describe();
  auto status = orgctl(authed_url, {"-o", "json", "status", "api"});
  ASSERT_EQ(status.status, 0) << status.describe();
  EXPECT_EQ(nlohmann::json::parse(status.out, nullptr, false).value("health", ""), "ok");
  // A rejected input and a bad API call also go through the logs.
  auto missing = orgctl(authed_url, {"status", "nope"});
  EXPECT_EQ(missing.status, 1) << missing.describe();

  std::map<std::string, std::string> surfaces;
  for (const char* path : {"/metrics", "/status", "/readyz", "/healthz"}) {
    auto r = http_get(orgd.http_port(), path);
    ASSERT_TRUE(r.has_value()) << path;
    surfaces[path] = r->body;
  }
  ASSERT_TRUE(orgd.process().signal(SIGTERM));
  ASSERT_EQ(orgd.process().wait_for_exit(kExitDeadline), 0) << orgd.describe();
  surfaces["stdout"] = orgd.process().stdout_text();
  surfaces["stderr"] = orgd.process().stderr_text();
  EXPECT_FALSE(surfaces["stderr"].empty()) << "debug logging produced nothing to check";
  for (const auto& [where, text] : surfaces) {
    EXPECT_FALSE(contains(text, canary)) << "the NATS token leaked into " << where << ":\n" << text;
  }
}

// ---------------------------------------------------------------------------------------------
// orgctl's command-line contract (exit code 2 for usage errors, global flags anywhere)

TEST_F(OrgdAgainstNats, OutputFlagAfterSubcommand) {
  OrgdProcess orgd({external_nats(server.url())});
  ASSERT_TRUE(orgd.wait_ready(server.url())) << orgd.describe();
  auto r = orgctl(server.url(), {"status", "-o", "json"});
  EXPECT_EQ(r.status, 0)
      << "`orgctl status -o json` (the form operators type) is refused: CLI11 accepts the "
         "top-level app's options after a subcommand only with app.fallthrough().\n"
      << r.describe();
  if (r.status == 0) {
    EXPECT_TRUE(nlohmann::json::parse(r.out, nullptr, false).is_object()) << r.describe();
  }
}

TEST(OrgctlUsage, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"status", "--no-such-flag"},
        std::vector<std::string>{"health", "report", "api", "http", "--status", "sideways"},
        std::vector<std::string>{}}) {
    std::vector<std::string> argv = {ORGCTL_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_command(argv);
    std::string joined;
    for (const auto& a : args) joined += " " + a;
    EXPECT_EQ(r.status, 2)
        << "orgctl" << joined << ": usage errors must exit 2 (0 ok, 1 orgd error, 2 usage, "
        << "3 unreachable); CLI11_PARSE alone returns CLI11's own codes (105, 106, 109...).\n"
        << r.describe();
    EXPECT_FALSE(r.err.empty() && r.out.empty()) << "a usage error should say what is wrong";
  }
}

}  // namespace
}  // namespace orgd
