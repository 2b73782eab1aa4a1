// P.api.status round trip with 1,000 repos: orgd builds a page of the OrgStatus (--page-size
// repos, 1,000 by default: the whole org) and encodes it as JSON for every request. The floor is a bare nats.c replier that answers with a precomputed
// payload of the same size, on the same private nats-server, in the same run. Requests to the
// two alternate, so both see the same machine conditions.
//
//   bench_status_rtt [--repos R] [--reported K] [--requests N] [--warmup W] [--page-size S]
//
// Every flag also reads ORGD_BENCH_<FLAG> (e.g. ORGD_BENCH_REQUESTS=5000).
#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "bench/bench_support.hpp"
#include "daemon/app/daemon.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"

namespace orgd::bench {
namespace {

constexpr const char* kOrg = "bench";
constexpr const char* kBaselineSubject = "bench.baseline.status";

struct Params {
  std::int64_t repos;
  std::int64_t reported;
  std::int64_t requests;
  std::int64_t warmup;
  std::int64_t page_size;
};

// The request body: one page of page_size repos.
std::string g_request_body = "{}";

std::string repo_name(std::int64_t i) { return fmt::format("repo-{:04}", i); }

std::string daemon_config(const Params& p, const std::string& url) {
  std::string yaml = fmt::format(
      "org: {}\nnats:\n  urls: [{}]\nhttp:\n  enabled: false\nlog:\n  level: warn\nrepos:\n", kOrg,
      url);
  for (std::int64_t r = 0; r < p.repos; ++r) {
    yaml += fmt::format("  {}:\n    health: {{services: [http], ttl: 1h}}\n", repo_name(r));
  }
  return yaml;
}

// The baseline replier: answers every request with the same bytes, from its delivery thread.
struct FixedReplier {
  std::string payload;
  natsConnection* conn = nullptr;

  static void on_request(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<FixedReplier*>(closure);
    if (const char* reply = natsMsg_GetReply(msg); reply != nullptr) {
      natsConnection_Publish(nc, reply, self->payload.data(),
                             static_cast<int>(self->payload.size()));
    }
    natsMsg_Destroy(msg);
  }
};

// One request; its round trip in microseconds and the reply size.
double timed_request(natsConnection* client, const std::string& subject,
                     std::size_t* reply_size = nullptr) {
  natsMsg* reply = nullptr;
  const auto start = SteadyClock::now();
  check(natsConnection_Request(&reply, client, subject.c_str(), g_request_body.data(),
                               static_cast<int>(g_request_body.size()), 5000),
        subject.c_str());
  const double us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  if (reply_size != nullptr) *reply_size = static_cast<std::size_t>(natsMsg_GetDataLength(reply));
  const char* error = nullptr;
  if (natsMsgHeader_Get(reply, "Nats-Service-Error", &error) == NATS_OK) {
    natsMsg_Destroy(reply);
    throw std::runtime_error(subject + " answered with an error");
  }
  natsMsg_Destroy(reply);
  return us;
}

void report_health(natsConnection* conn, const Params& p) {
  // Every other repo reported, some degraded, so the reply carries versions and timestamps
  // like a live org's.
  for (std::int64_t r = 0; r < p.reported; ++r) {
    const std::string subject =
        fmt::format("org.{}.health.{}.http", kOrg, repo_name(r * p.repos / p.reported));
    const std::string body =
        fmt::format(R"({{"status":"{}","version":"1.{}.{}","ttlSeconds":3600}})",
                    r % 10 == 0 ? "degraded" : "ok", r % 7, r % 13);
    natsMsg* reply = nullptr;
    check(natsConnection_RequestString(&reply, conn, subject.c_str(), body.c_str(), 5000),
          "health report");
    natsMsg_Destroy(reply);
  }
}

std::string micros(double us) {
  return us >= 1000 ? fmt::format("{:.2f} ms", us / 1000) : fmt::format("{:.0f} µs", us);
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_status_rtt [--repos R=1000] [--reported K=500] [--requests N=2000] "
        "[--warmup W=200] [--page-size S=min(R,5000)]\n(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  Params p;
  p.repos = flags.integer("repos", 1000, 1, 100'000);
  p.reported = flags.integer("reported", p.repos / 2, 0, p.repos);
  p.requests = flags.integer("requests", 2000, 10, 10'000'000);
  p.warmup = flags.integer("warmup", 200, 0, 1'000'000);
  p.page_size = flags.integer("page-size", std::min<std::int64_t>(p.repos, 5000), 1, 5000);
  g_request_body = fmt::format(R"({{"pageSize":{}}})", p.page_size);

  logging::setup(LogConfig{"warn", "text"});
  BenchServer server;

  Config config =
      load_config_string(daemon_config(p, server.url()), "bench_status_rtt", Environment());
  logging::setup(config.log);
  Daemon daemon(std::move(config), DaemonOptions{}, Environment());
  daemon.start();
  if (!wait_for([&] { return daemon.ready(); }, 30s)) {
    throw std::runtime_error("orgd did not become ready within 30 s");
  }

  // One client for both, latency-minded (SendAsap), as orgctl and services would be.
  auto client = connect(server.url(), "bench-client", true);
  report_health(client.get(), p);

  const std::string status_subject = fmt::format("org.{}.api.status", kOrg);
  std::size_t orgd_size = 0;
  timed_request(client.get(), status_subject, &orgd_size);

  FixedReplier replier;
  replier.payload.assign(orgd_size, 'x');
  auto replier_conn = connect(server.url(), "bench-baseline-replier", true);
  natsSubscription* raw = nullptr;
  check(natsConnection_Subscribe(&raw, replier_conn.get(), kBaselineSubject,
                                 &FixedReplier::on_request, &replier),
        "subscribe");
  Subscription sub(raw);
  check(natsConnection_Flush(replier_conn.get()), "flush");

  fmt::print(
      "bench_status_rtt: P.api.status with {} repos ({} reported), {} sequential requests each "
      "(after {} warm-up), alternating orgd and baseline\n"
      "machine: {}; nats-server at {}\n",
      grouped(static_cast<std::uint64_t>(p.repos)), grouped(static_cast<std::uint64_t>(p.reported)),
      grouped(static_cast<std::uint64_t>(p.requests)), p.warmup, machine_summary(), server.url());
  std::fflush(stdout);

  for (std::int64_t i = 0; i < p.warmup; ++i) {
    timed_request(client.get(), status_subject);
    timed_request(client.get(), kBaselineSubject);
  }
  std::vector<double> orgd_us;
  std::vector<double> base_us;
  orgd_us.reserve(static_cast<std::size_t>(p.requests));
  base_us.reserve(static_cast<std::size_t>(p.requests));
  std::size_t base_size = 0;
  for (std::int64_t i = 0; i < p.requests; ++i) {
    // Alternate which goes first, so neither always follows the other.
    if (i % 2 == 0) {
      orgd_us.push_back(timed_request(client.get(), status_subject, &orgd_size));
      base_us.push_back(timed_request(client.get(), kBaselineSubject, &base_size));
    } else {
      base_us.push_back(timed_request(client.get(), kBaselineSubject, &base_size));
      orgd_us.push_back(timed_request(client.get(), status_subject, &orgd_size));
    }
  }
  daemon.stop();

  const double b50 = percentile(base_us, 0.50);
  const double b99 = percentile(base_us, 0.99);
  const double o50 = percentile(orgd_us, 0.50);
  const double o99 = percentile(orgd_us, 0.99);
  fmt::print("  reply sizes: orgd {} bytes, baseline {} bytes\n", grouped(orgd_size),
             grouped(base_size));
  fmt::print("  baseline  nats.c replier, fixed payload : p50 {:>9}  p99 {:>9}\n", micros(b50),
             micros(b99));
  fmt::print("  orgd      P.api.status (OrgStatus JSON) : p50 {:>9}  p99 {:>9}\n", micros(o50),
             micros(o99));
  fmt::print("  ratio orgd/baseline: p50 {:.2f}  p99 {:.2f}\n", b50 > 0 ? o50 / b50 : 0,
             b99 > 0 ? o99 / b99 : 0);
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_status_rtt: " << e.what() << "\n";
    return 2;
  }
}
