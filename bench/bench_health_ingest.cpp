// Health report ingest: how many 70-byte JSON HealthReports per second orgd takes in, next to
// the floor of a bare nats.c subscriber that only counts them, in the same run on the same
// private nats-server.
//
//   bench_health_ingest [--messages N] [--repos R] [--services S] [--rounds K] [--window W]
//
// Every flag also reads ORGD_BENCH_<FLAG> (e.g. ORGD_BENCH_MESSAGES=100000).
//
// The publisher keeps at most W reports ahead of what the receiver has processed (closed loop):
// the figure is a sustained rate with nothing dropped, not the size of a burst that fits in
// buffers. The baseline runs first (orgd is not started yet, so it does not compete for the
// CPUs), then orgd's rounds.
#include <fmt/format.h>
#include <nats/nats.h>

#include <atomic>
#include <cstdio>
#include <iostream>

#include "bench/bench_support.hpp"
#include "daemon/app/daemon.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"

namespace orgd::bench {
namespace {

// 70 bytes, the size DESIGN.md's example report has with a short detail.
constexpr std::string_view kReport =
    R"({"status":"ok","version":"1.4.2","detail":"heartbeat","ttlSeconds":30})";
static_assert(kReport.size() == 70);

constexpr const char* kOrg = "bench";

struct Params {
  std::int64_t messages;
  std::int64_t repos;
  std::int64_t services;
  std::int64_t rounds;
  std::int64_t window;
};

struct Round {
  double rate = 0;             // msgs/s, first publish to last message processed
  std::uint64_t received = 0;  // what the receiver processed of this round
};

std::string repo_name(std::int64_t i) { return fmt::format("repo-{:02}", i); }
std::string service_name(std::int64_t i) { return fmt::format("svc-{}", i); }

std::vector<std::string> report_subjects(const Params& p) {
  std::vector<std::string> out;
  for (std::int64_t r = 0; r < p.repos; ++r) {
    for (std::int64_t s = 0; s < p.services; ++s) {
      out.push_back(fmt::format("org.{}.health.{}.{}", kOrg, repo_name(r), service_name(s)));
    }
  }
  return out;
}

std::string daemon_config(const Params& p, const std::string& url) {
  std::string yaml = fmt::format(
      "org: {}\nnats:\n  urls: [{}]\nhttp:\n  enabled: false\nlog:\n  level: warn\nrepos:\n", kOrg,
      url);
  for (std::int64_t r = 0; r < p.repos; ++r) {
    yaml += fmt::format("  {}:\n    health:\n      services: [", repo_name(r));
    for (std::int64_t s = 0; s < p.services; ++s) {
      yaml += (s > 0 ? ", " : "") + service_name(s);
    }
    yaml += "]\n      ttl: 5m\n";
  }
  return yaml;
}

// Publishes p.messages reports round-robin over `subjects`, never more than p.window ahead of
// `processed` (a counter the receiver advances), and times until the receiver has them all.
// A receiver that stops making progress for 5 s ends the round short (counted as missing).
Round publish_round(natsConnection* publisher, const std::vector<std::string>& subjects,
                    const Params& p, const std::function<std::uint64_t()>& processed) {
  const std::uint64_t base = processed();
  const auto n = static_cast<std::uint64_t>(p.messages);
  const auto window = static_cast<std::uint64_t>(p.window);
  auto done = [&] { return processed() - base; };
  const auto start = SteadyClock::now();
  for (std::uint64_t i = 0; i < n; ++i) {
    if (i % 1024 == 0 && i - done() > window) {
      // Let the flusher send what is buffered, then wait for the receiver to catch up.
      natsConnection_FlushTimeout(publisher, 5000);
      wait_for([&] { return i - done() <= window / 2; }, 5s);
    }
    check(natsConnection_Publish(publisher, subjects[i % subjects.size()].c_str(), kReport.data(),
                                 static_cast<int>(kReport.size())),
          "publish");
  }
  check(natsConnection_FlushTimeout(publisher, 10000), "flush");
  std::uint64_t last = done();
  auto last_progress = SteadyClock::now();
  auto last_seen = last_progress;
  while (last < n && SteadyClock::now() - last_progress < 5s) {
    std::this_thread::sleep_for(50us);
    const auto now_done = done();
    if (now_done != last) {
      last = now_done;
      last_progress = last_seen = SteadyClock::now();
    }
  }
  if (last >= n) last_seen = SteadyClock::now();
  Round r;
  r.received = last;
  r.rate = static_cast<double>(std::min(last, n)) /
           std::chrono::duration<double>(last_seen - start).count();
  return r;
}

// The floor: an async nats.c subscriber on the same subjects that only counts.
std::vector<Round> run_baseline(const std::string& url, const std::vector<std::string>& subjects,
                                const Params& p, std::int64_t& dropped) {
  std::atomic<std::uint64_t> count{0};
  auto receiver = connect(url, "bench-baseline-subscriber", false);
  natsSubscription* raw = nullptr;
  check(natsConnection_Subscribe(
            &raw, receiver.get(), fmt::format("org.{}.health.>", kOrg).c_str(),
            [](natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
              static_cast<std::atomic<std::uint64_t>*>(closure)->fetch_add(
                  1, std::memory_order_relaxed);
              natsMsg_Destroy(msg);
            },
            &count),
        "subscribe");
  Subscription sub(raw);
  // No slow-consumer drops: hold a whole round if need be.
  check(natsSubscription_SetPendingLimits(sub.get(), static_cast<int>(p.messages) + 1024,
                                          1024 * 1024 * 1024),
        "pending limits");
  check(natsConnection_Flush(receiver.get()), "flush");

  auto publisher = connect(url, "bench-publisher", false);
  std::vector<Round> rounds;
  for (std::int64_t i = 0; i < p.rounds; ++i) {
    rounds.push_back(publish_round(publisher.get(), subjects, p,
                                   [&] { return count.load(std::memory_order_relaxed); }));
  }
  int64_t d = 0;
  natsSubscription_GetDropped(sub.get(), &d);
  dropped = d;
  return rounds;
}

std::vector<Round> run_orgd(const std::string& url, const std::vector<std::string>& subjects,
                            const Params& p, std::uint64_t& rejected_or_dropped) {
  Config config = load_config_string(daemon_config(p, url), "bench_health_ingest", Environment());
  logging::setup(config.log);
  Daemon daemon(std::move(config), DaemonOptions{}, Environment());
  daemon.start();
  if (!wait_for([&] { return daemon.ready(); }, 30s)) {
    throw std::runtime_error("orgd did not become ready within 30 s");
  }
  auto publisher = connect(url, "bench-publisher", false);
  std::vector<Round> rounds;
  for (std::int64_t i = 0; i < p.rounds; ++i) {
    rounds.push_back(publish_round(publisher.get(), subjects, p,
                                   [&] { return daemon.health_reports_processed(); }));
  }
  const auto expected = static_cast<std::uint64_t>(p.messages * p.rounds);
  const auto processed = daemon.health_reports_processed();
  rejected_or_dropped = processed < expected ? expected - processed : 0;
  daemon.stop();
  return rounds;
}

std::string rates_text(const std::vector<Round>& rounds) {
  std::string out;
  for (const auto& r : rounds)
    out += (out.empty() ? "" : ", ") + grouped(static_cast<std::uint64_t>(r.rate));
  return out;
}

std::vector<double> rates(const std::vector<Round>& rounds) {
  std::vector<double> out;
  for (const auto& r : rounds) out.push_back(r.rate);
  return out;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_health_ingest [--messages N=500000] [--repos R=10] [--services S=3] "
        "[--rounds K=3] [--window W=100000]\n(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  Params p;
  p.messages = flags.integer("messages", 500'000, 1000, 100'000'000);
  p.repos = flags.integer("repos", 10, 1, 1000);
  p.services = flags.integer("services", 3, 1, 100);
  p.rounds = flags.integer("rounds", 3, 1, 100);
  p.window = flags.integer("window", 100'000, 1024, 10'000'000);

  logging::setup(LogConfig{"warn", "text"});
  BenchServer server;
  const auto subjects = report_subjects(p);
  fmt::print(
      "bench_health_ingest: {} HealthReports of {} bytes per round, {} rounds, on "
      "org.{}.health.<repo>.<service> ({} repos x {} services), publisher at most {} ahead\n"
      "machine: {}; nats-server at {}\n",
      grouped(static_cast<std::uint64_t>(p.messages)), kReport.size(), p.rounds, kOrg, p.repos,
      p.services, grouped(static_cast<std::uint64_t>(p.window)), machine_summary(), server.url());
  std::fflush(stdout);

  std::int64_t baseline_dropped = 0;
  const auto baseline = run_baseline(server.url(), subjects, p, baseline_dropped);
  std::uint64_t baseline_missing = 0;
  for (const auto& r : baseline) {
    baseline_missing +=
        static_cast<std::uint64_t>(p.messages) - std::min<std::uint64_t>(r.received, p.messages);
  }
  std::uint64_t orgd_missing = 0;
  const auto orgd = run_orgd(server.url(), subjects, p, orgd_missing);

  const double base_rate = median(rates(baseline));
  const double orgd_rate = median(rates(orgd));
  fmt::print(
      "  baseline  nats.c async subscriber, count only : {:>11} msgs/s  (rounds: {}; "
      "dropped {}, missing {})\n",
      grouped(static_cast<std::uint64_t>(base_rate)), rates_text(baseline), baseline_dropped,
      baseline_missing);
  fmt::print(
      "  orgd      Daemon, health_reports_processed()  : {:>11} msgs/s  (rounds: {}; "
      "missing {})\n",
      grouped(static_cast<std::uint64_t>(orgd_rate)), rates_text(orgd), orgd_missing);
  fmt::print("  ratio orgd/baseline: {:.2f}  (medians)\n",
             base_rate > 0 ? orgd_rate / base_rate : 0);
  return baseline_dropped == 0 && baseline_missing == 0 && orgd_missing == 0 ? 0 : 1;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_health_ingest: " << e.what() << "\n";
    return 2;
  }
}
