// Start to ready and idle memory of the real orgd binary at the size of an org: a generated
// config of R repos (1,000 and 10,000 by default; each with a deploy target on the `local`
// provider, 3 health services and 3 secret names) against the benchmark's own nats-server.
//
// For each size, on a fresh server:
//   cold  orgd started with nothing stored; once ready, every service of every repo reports
//         (R × 3 health reports), and orgd writes each state to ORGD_HEALTH; then orgd stops.
//   warm  orgd started again, rebuilding its health picture from ORGD_HEALTH's R × 3 states,
//         alternating with the baseline, `runs` times each.
// Baseline: a nats-server (JetStream on, empty store of its own) started the same way by the
// same code: exec, then its ports file, then its HTTP /healthz polled until 200, as orgd's
// ports file and /readyz are. Ready is from fork/exec to the first 200; idle RSS is VmRSS after
// `idle-ms` with nothing asked of either process.
//
//   bench_startup [--repos R,...] [--runs N] [--idle-ms MS]
//
// Every flag also reads ORGD_BENCH_<FLAG> (ORGD_BENCH_REPOS is shared with other benchmarks).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench_support.hpp"
#include "daemon/core/logging.hpp"
#include "tests/support/subprocess.hpp"

#ifndef ORGD_DAEMON_BINARY
#error "ORGD_DAEMON_BINARY must name the built orgd"
#endif

namespace orgd::bench {
namespace {

constexpr const char* kOrg = "bench";

std::string repo_name(std::int64_t i) { return fmt::format("repo-{:05}", i); }

std::string orgd_config(std::int64_t repos, const std::string& url) {
  std::string yaml = fmt::format(
      "org: {}\nnats:\n  urls: [{}]\nhttp:\n  listen: 127.0.0.1:0\nlog:\n  level: warn\n"
      "deploy:\n  health_gate: false\nproviders:\n  local: {{type: local}}\nrepos:\n",
      kOrg, url);
  for (std::int64_t i = 0; i < repos; ++i) {
    yaml += fmt::format("  {}:\n", repo_name(i));
    if (i % 10 == 9) yaml += fmt::format("    depends_on: [{}]\n", repo_name(i - 9));
    yaml +=
        "    deploy:\n      production: {provider: local, duration: 1s}\n"
        "    health: {services: [http, worker, db], ttl: 1h}\n"
        "    secrets: [DATABASE_URL, SESSION_KEY, API_TOKEN]\n";
  }
  return yaml;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One HTTP GET on loopback; the status code, or 0 when the connection fails.
int http_status(std::uint16_t port, const char* target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int status = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req =
        fmt::format("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", target);
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[64];
      const ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
      if (n > 12) {
        buf[n] = '\0';
        std::sscanf(buf, "HTTP/1.%*d %d", &status);
      }
    }
  }
  ::close(fd);
  return status;
}

// What one start measured.
struct Start {
  double ready_s = 0;
  std::uint64_t rss = 0;
};

using testing::Subprocess;
using testing::SubprocessOptions;

// Polls (every 2 ms, the same for both sides) until `port_of` yields a port and GET `target` on
// it says 200; the time since `start`.
double wait_ready(Subprocess& p, SteadyClock::time_point start,
                  const std::function<std::uint16_t()>& port_of, const char* target,
                  const char* who) {
  std::uint16_t port = 0;
  const auto until = start + 120s;
  for (;;) {
    if (!p.running()) throw std::runtime_error(fmt::format("{} exited: {}", who, p.describe()));
    if (SteadyClock::now() > until) {
      throw std::runtime_error(fmt::format("{} not ready in 120 s: {}", who, p.describe()));
    }
    if (port == 0) port = port_of();
    if (port != 0 && http_status(port, target) == 200) return seconds_since(start);
    std::this_thread::sleep_for(2ms);
  }
}

void stop(Subprocess& p, const char* who) {
  p.signal(SIGTERM);
  if (!p.wait_for_exit(60s)) {
    p.kill();
    throw std::runtime_error(fmt::format("{} did not stop on SIGTERM in 60 s", who));
  }
}

class OrgdRun {
 public:
  OrgdRun(const std::filesystem::path& dir) : ports_(dir / "ports.json") {
    std::filesystem::remove(ports_);
    SubprocessOptions o;
    o.argv = {ORGD_DAEMON_BINARY, "--config", (dir / "orgd.yaml").string(), "--ports-file",
              ports_.string()};
    o.unset_env = testing::kOutsideEnv;
    o.cwd = dir;
    start_ = SteadyClock::now();
    process_ = std::make_unique<Subprocess>(std::move(o));
  }
  Start measure(std::chrono::milliseconds idle) {
    Start s;
    s.ready_s = wait_ready(
        *process_, start_,
        [&]() -> std::uint16_t {
          const auto j = nlohmann::json::parse(read_text(ports_), nullptr, false);
          return j.is_object() && j.contains("http") && j["http"].is_number_unsigned()
                     ? j["http"].get<std::uint16_t>()
                     : 0;
        },
        "/readyz", "orgd");
    std::this_thread::sleep_for(idle);
    s.rss = rss_bytes(process_->pid());
    return s;
  }
  ~OrgdRun() { stop(*process_, "orgd"); }

 private:
  std::filesystem::path ports_;
  SteadyClock::time_point start_;
  std::unique_ptr<Subprocess> process_;
};

// The baseline: nats-server -js on random ports, ready when its monitoring /healthz says 200.
Start nats_server_start(std::chrono::milliseconds idle) {
  ScratchDir dir("orgd-bench-baseline");
  const char* env = std::getenv("ORGD_TEST_NATS_SERVER");
  SubprocessOptions o;
  o.argv = {env != nullptr && *env != '\0' ? env : "nats-server",
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-m",
            "-1",
            "-js",
            "-sd",
            (dir.path() / "store").string(),
            "--ports_file_dir",
            dir.path().string()};
  o.cwd = dir.path();
  const auto start = SteadyClock::now();
  Subprocess p(std::move(o));
  const std::filesystem::path ports = dir.path() / fmt::format("nats-server_{}.ports", p.pid());
  Start s;
  s.ready_s = wait_ready(
      p, start,
      [&]() -> std::uint16_t {
        const auto j = nlohmann::json::parse(read_text(ports), nullptr, false);
        if (!j.is_object() || !j.contains("monitoring") || !j["monitoring"].is_array() ||
            j["monitoring"].empty() || !j["monitoring"][0].is_string()) {
          return 0;
        }
        const std::string url = j["monitoring"][0].get<std::string>();
        const auto colon = url.rfind(':');
        return colon == std::string::npos
                   ? std::uint16_t{0}
                   : static_cast<std::uint16_t>(std::stoi(url.substr(colon + 1)));
      },
      "/healthz", "nats-server");
  std::this_thread::sleep_for(idle);
  s.rss = rss_bytes(p.pid());
  stop(p, "nats-server");
  return s;
}

std::uint64_t stream_messages(natsConnection* conn, const char* stream) {
  jsOptions opts;
  jsOptions_Init(&opts);
  jsCtx* js = nullptr;
  check(natsConnection_JetStream(&js, conn, &opts), "jetstream");
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus st = js_GetStreamInfo(&info, js, stream, nullptr, &err);
  std::uint64_t n = 0;
  if (st == NATS_OK) {
    n = info->State.Msgs;
    jsStreamInfo_Destroy(info);
  }
  jsCtx_Destroy(js);
  return n;
}

// Every service of every repo reports once (a tenth degraded); waits until ORGD_HEALTH holds a
// state for each. The seconds that took.
double report_all(natsConnection* conn, std::int64_t repos) {
  const auto start = SteadyClock::now();
  const char* services[] = {"http", "worker", "db"};
  for (std::int64_t r = 0; r < repos; ++r) {
    for (int s = 0; s < 3; ++s) {
      const std::string subject =
          fmt::format("org.{}.health.{}.{}", kOrg, repo_name(r), services[s]);
      const std::string body =
          fmt::format(R"({{"status":"{}","version":"1.{}.{}","ttlSeconds":3600}})",
                      r % 10 == 0 ? "degraded" : "ok", r % 7, r % 13);
      check(natsConnection_PublishString(conn, subject.c_str(), body.c_str()), "health report");
    }
    if (r % 500 == 499) check(natsConnection_Flush(conn), "flush");
  }
  check(natsConnection_Flush(conn), "flush");
  const auto want = static_cast<std::uint64_t>(repos * 3);
  std::uint64_t have = 0;
  if (!wait_for(
          [&] {
            have = stream_messages(conn, "ORGD_HEALTH");
            if (have < want) std::this_thread::sleep_for(20ms);
            return have >= want;
          },
          180s)) {
    throw std::runtime_error(
        fmt::format("ORGD_HEALTH holds {} states after 180 s, {} expected", have, want));
  }
  return seconds_since(start);
}

std::string seconds_text(double s) {
  return s >= 1 ? fmt::format("{:.2f} s", s) : fmt::format("{:.0f} ms", s * 1000);
}
std::string mib(std::uint64_t b) {
  return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20));
}

struct Figure {
  std::int64_t repos = 0;
  double cold_s = 0, warm_s = 0, base_s = 0;
  std::uint64_t cold_rss = 0, warm_rss = 0, base_rss = 0;
};

Figure measure(std::int64_t repos, std::int64_t runs, std::chrono::milliseconds idle) {
  BenchServer server;
  ScratchDir dir("orgd-bench-startup");
  {
    std::ofstream out(dir.path() / "orgd.yaml");
    out << orgd_config(repos, server.url());
  }
  auto client = connect(server.url(), "bench_startup", false);
  Figure f;
  f.repos = repos;
  double report_s = 0;
  {
    OrgdRun cold(dir.path());
    const Start s = cold.measure(idle);
    f.cold_s = s.ready_s;
    f.cold_rss = s.rss;
    report_s = report_all(client.get(), repos);
  }
  std::vector<double> warm_s, base_s, warm_rss, base_rss;
  for (std::int64_t i = 0; i < runs; ++i) {
    for (int side = 0; side < 2; ++side) {
      if ((side == 0) == (i % 2 == 0)) {
        OrgdRun warm(dir.path());
        const Start s = warm.measure(idle);
        warm_s.push_back(s.ready_s);
        warm_rss.push_back(static_cast<double>(s.rss));
      } else {
        const Start s = nats_server_start(idle);
        base_s.push_back(s.ready_s);
        base_rss.push_back(static_cast<double>(s.rss));
      }
    }
  }
  f.warm_s = median(warm_s);
  f.base_s = median(base_s);
  f.warm_rss = static_cast<std::uint64_t>(median(warm_rss));
  f.base_rss = static_cast<std::uint64_t>(median(base_rss));
  fmt::print(
      "  {:>6} repos ({} services; {} health states reported in {} before the warm runs), "
      "{} runs a side, idle {} ms:\n"
      "    baseline  nats-server -js, empty store     : ready {:>8}  idle RSS {:>9}\n"
      "    orgd      cold (nothing stored)            : ready {:>8}  idle RSS {:>9}\n"
      "    orgd      warm (picture from ORGD_HEALTH)  : ready {:>8}  idle RSS {:>9}\n"
      "    ratio orgd warm/baseline: ready {:.2f}  idle RSS {:.2f}  (medians)\n",
      grouped(static_cast<std::uint64_t>(repos)), grouped(static_cast<std::uint64_t>(repos * 3)),
      grouped(static_cast<std::uint64_t>(repos * 3)), seconds_text(report_s), runs, idle.count(),
      seconds_text(f.base_s), mib(f.base_rss), seconds_text(f.cold_s), mib(f.cold_rss),
      seconds_text(f.warm_s), mib(f.warm_rss), f.warm_s / f.base_s,
      static_cast<double>(f.warm_rss) / static_cast<double>(f.base_rss));
  std::fflush(stdout);
  return f;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_startup [--repos R,...=1000,10000] [--runs N=3] [--idle-ms MS=3000]\n"
        "(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  const auto sizes = flags.integers("repos", {1000, 10000}, 1, 100'000);
  const auto runs = flags.integer("runs", 3, 1, 100);
  const auto idle = std::chrono::milliseconds(flags.integer("idle-ms", 3000, 0, 600'000));
  logging::setup(LogConfig{"warn", "text"});
  fmt::print(
      "bench_startup: the orgd binary from exec to /readyz 200 and its VmRSS after idling, each "
      "repo with a deploy target, 3 health services and 3 secret names, vs nats-server -js from "
      "exec to /healthz 200, alternating\nmachine: {}\n",
      machine_summary());
  std::vector<Figure> all;
  for (auto repos : sizes) all.push_back(measure(repos, runs, idle));
  if (all.size() > 1) {
    const Figure& a = all.front();
    const Figure& b = all.back();
    fmt::print(
        "  growth {} → {} repos (×{:.0f}): orgd warm ready ×{:.1f}, cold ready ×{:.1f}, idle RSS "
        "×{:.2f} (+{}); baseline ready ×{:.2f}; ratio ready {:.2f} → {:.2f}, RSS {:.2f} → "
        "{:.2f}\n",
        grouped(static_cast<std::uint64_t>(a.repos)), grouped(static_cast<std::uint64_t>(b.repos)),
        static_cast<double>(b.repos) / static_cast<double>(a.repos), b.warm_s / a.warm_s,
        b.cold_s / a.cold_s, static_cast<double>(b.warm_rss) / static_cast<double>(a.warm_rss),
        mib(b.warm_rss - std::min(a.warm_rss, b.warm_rss)), b.base_s / a.base_s,
        a.warm_s / a.base_s, b.warm_s / b.base_s,
        static_cast<double>(a.warm_rss) / static_cast<double>(a.base_rss),
        static_cast<double>(b.warm_rss) / static_cast<double>(b.base_rss));
  }
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_startup: " << e.what() << "\n";
    return 2;
  }
}
