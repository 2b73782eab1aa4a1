// P.api.status at the size of an org: orgd configured with R repos (1,000 and 10,000 by default),
// half of them reported, walked page by page (pageSize S, following nextCursor until the last
// page) the way orgctl walks it. The floor is a bare nats.c replier that answers every page of a
// walk with a precomputed payload of that page's size, on the same private nats-server, in the
// same run: the same number of requests, the same bytes. Walks of the two alternate, so both see
// the same machine conditions.
//
//   bench_status_rtt [--repos R,...] [--page-size S,...] [--pages N] [--warmup W]
//
// Every flag also reads ORGD_BENCH_<FLAG> (e.g. ORGD_BENCH_REPOS=1000, ORGD_BENCH_PAGES=200).
#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string_view>

#include "bench/bench_support.hpp"
#include "daemon/app/daemon.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"

namespace orgd::bench {
namespace {

constexpr const char* kOrg = "bench";
constexpr const char* kBaselineSubject = "bench.baseline.status";

struct Params {
  std::vector<std::int64_t> repos;
  std::vector<std::int64_t> page_sizes;
  std::int64_t pages;   // page requests per side and combination (rounded up to whole walks)
  std::int64_t warmup;  // walks per side before timing
};

std::string repo_name(std::int64_t i) { return fmt::format("repo-{:05}", i); }

std::string daemon_config(std::int64_t repos, const std::string& url) {
  std::string yaml = fmt::format(
      "org: {}\nnats:\n  urls: [{}]\nhttp:\n  enabled: false\nlog:\n  level: warn\nrepos:\n", kOrg,
      url);
  for (std::int64_t r = 0; r < repos; ++r) {
    yaml += fmt::format("  {}:\n    health: {{services: [http], ttl: 1h}}\n", repo_name(r));
  }
  return yaml;
}

// The baseline replier: the request body is the page's index in the walk, the reply that
// page's bytes (as many as orgd's reply for it), from its delivery thread.
struct PageReplier {
  std::mutex mutex;  // guards payloads (set between walks, read on the delivery thread)
  std::vector<std::string> payloads;

  static void on_request(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<PageReplier*>(closure);
    if (const char* reply = natsMsg_GetReply(msg); reply != nullptr) {
      std::size_t index = 0;
      const char* data = natsMsg_GetData(msg);
      for (int i = 0; i < natsMsg_GetDataLength(msg); ++i) {
        index = index * 10 + static_cast<std::size_t>(data[i] - '0');
      }
      std::lock_guard lock(self->mutex);
      const std::string& p = self->payloads.at(std::min(index, self->payloads.size() - 1));
      natsConnection_Publish(nc, reply, p.data(), static_cast<int>(p.size()));
    }
    natsMsg_Destroy(msg);
  }
};

struct Walk {
  double total_us = 0;
  std::vector<double> page_us;
  std::vector<std::size_t> sizes;
};

// One request; its round trip in microseconds; the reply's bytes into *body.
double timed_request(natsConnection* client, const char* subject, const std::string& request,
                     std::string* body) {
  natsMsg* reply = nullptr;
  const auto start = SteadyClock::now();
  check(natsConnection_Request(&reply, client, subject, request.data(),
                               static_cast<int>(request.size()), 10000),
        subject);
  const double us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  const char* error = nullptr;
  const bool failed = natsMsgHeader_Get(reply, "Nats-Service-Error", &error) == NATS_OK;
  const std::string error_text = failed && error != nullptr ? error : "";
  body->assign(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  if (failed) {
    throw std::runtime_error(
        fmt::format("{} answered with an error: {} {}", subject, error_text, body->substr(0, 300)));
  }
  return us;
}

// The cursor orgd put in a page (empty on the last): nextCursor follows the repos array, so it
// is found from the end without parsing the page.
std::string next_cursor(const std::string& page) {
  constexpr std::string_view kKey = "\"nextCursor\":\"";
  const auto at = page.rfind(kKey);
  if (at == std::string::npos) return "";
  const auto from = at + kKey.size();
  const auto end = page.find('"', from);
  return end == std::string::npos ? "" : page.substr(from, end - from);
}

Walk walk_orgd(natsConnection* client, const std::string& subject, std::int64_t page_size) {
  Walk w;
  std::string cursor;
  std::string body;
  const auto start = SteadyClock::now();
  for (;;) {
    const std::string request =
        cursor.empty() ? fmt::format(R"({{"pageSize":{}}})", page_size)
                       : fmt::format(R"({{"pageSize":{},"cursor":"{}"}})", page_size, cursor);
    w.page_us.push_back(timed_request(client, subject.c_str(), request, &body));
    w.sizes.push_back(body.size());
    cursor = next_cursor(body);
    if (cursor.empty()) break;
    if (w.sizes.size() > 100'000) throw std::runtime_error("status walk does not end");
  }
  w.total_us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  return w;
}

Walk walk_baseline(natsConnection* client, std::size_t pages) {
  Walk w;
  std::string body;
  const auto start = SteadyClock::now();
  for (std::size_t i = 0; i < pages; ++i) {
    w.page_us.push_back(timed_request(client, kBaselineSubject, std::to_string(i), &body));
    w.sizes.push_back(body.size());
  }
  w.total_us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
  return w;
}

void report_health(natsConnection* conn, std::int64_t repos, std::int64_t reported) {
  // Every other repo reported, some degraded, so the pages carry versions and timestamps like a
  // live org's.
  for (std::int64_t r = 0; r < reported; ++r) {
    const std::string subject =
        fmt::format("org.{}.health.{}.http", kOrg, repo_name(r * repos / reported));
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
  if (us >= 1'000'000) return fmt::format("{:.2f} s", us / 1e6);
  return us >= 1000 ? fmt::format("{:.2f} ms", us / 1000) : fmt::format("{:.0f} µs", us);
}

struct Figure {
  std::int64_t repos = 0;
  std::int64_t page_size = 0;
  std::size_t pages = 0;                                          // a walk's
  std::size_t bytes = 0;                                          // a walk's
  double orgd_walk = 0, base_walk = 0;                            // medians, µs
  double orgd_p50 = 0, orgd_p99 = 0, base_p50 = 0, base_p99 = 0;  // per page, µs
};

Figure measure(const Params& p, natsConnection* client, PageReplier& replier,
               const std::string& subject, std::int64_t repos, std::int64_t page_size) {
  Figure f;
  f.repos = repos;
  f.page_size = page_size;
  const Walk first = walk_orgd(client, subject, page_size);
  f.pages = first.sizes.size();
  for (auto s : first.sizes) f.bytes += s;
  {
    std::lock_guard lock(replier.mutex);
    replier.payloads.clear();
    for (auto s : first.sizes) replier.payloads.emplace_back(s, 'x');
  }
  const auto walks = std::max<std::int64_t>(
      3, (p.pages + static_cast<std::int64_t>(f.pages) - 1) / static_cast<std::int64_t>(f.pages));
  for (std::int64_t i = 0; i < p.warmup; ++i) {
    walk_orgd(client, subject, page_size);
    walk_baseline(client, f.pages);
  }
  std::vector<double> orgd_walks, base_walks, orgd_pages, base_pages;
  for (std::int64_t i = 0; i < walks; ++i) {
    // Alternate which goes first, so neither always follows the other.
    Walk o, b;
    if (i % 2 == 0) {
      o = walk_orgd(client, subject, page_size);
      b = walk_baseline(client, f.pages);
    } else {
      b = walk_baseline(client, f.pages);
      o = walk_orgd(client, subject, page_size);
    }
    if (o.sizes.size() != f.pages) {
      throw std::runtime_error(
          fmt::format("a walk of {} pages, then one of {}", f.pages, o.sizes.size()));
    }
    orgd_walks.push_back(o.total_us);
    base_walks.push_back(b.total_us);
    orgd_pages.insert(orgd_pages.end(), o.page_us.begin(), o.page_us.end());
    base_pages.insert(base_pages.end(), b.page_us.begin(), b.page_us.end());
  }
  f.orgd_walk = median(orgd_walks);
  f.base_walk = median(base_walks);
  f.orgd_p50 = percentile(orgd_pages, 0.50);
  f.orgd_p99 = percentile(orgd_pages, 0.99);
  f.base_p50 = percentile(base_pages, 0.50);
  f.base_p99 = percentile(base_pages, 0.99);
  fmt::print(
      "  {:>6} repos, pages of {:>4}: a walk is {} page{}, {} bytes; {} walks a side\n"
      "    baseline  nats.c replier, same bytes : walk {:>9}  page p50 {:>9}  p99 {:>9}\n"
      "    orgd      P.api.status pages         : walk {:>9}  page p50 {:>9}  p99 {:>9}\n"
      "    ratio orgd/baseline: walk {:.2f}  page p50 {:.2f}  p99 {:.2f}\n",
      grouped(static_cast<std::uint64_t>(repos)), page_size, f.pages, f.pages == 1 ? "" : "s",
      grouped(f.bytes), walks, micros(f.base_walk), micros(f.base_p50), micros(f.base_p99),
      micros(f.orgd_walk), micros(f.orgd_p50), micros(f.orgd_p99), f.orgd_walk / f.base_walk,
      f.orgd_p50 / f.base_p50, f.orgd_p99 / f.base_p99);
  std::fflush(stdout);
  return f;
}

std::vector<Figure> measure_org(const Params& p, std::int64_t repos) {
  BenchServer server;
  const auto startup = SteadyClock::now();
  Config config =
      load_config_string(daemon_config(repos, server.url()), "bench_status_rtt", Environment());
  logging::setup(config.log);
  Daemon daemon(std::move(config), DaemonOptions{}, Environment());
  daemon.start();
  if (!wait_for([&] { return daemon.ready(); }, 60s)) {
    throw std::runtime_error("orgd did not become ready within 60 s");
  }
  const double startup_s = seconds_since(startup);

  // One client for both, latency-minded (SendAsap), as orgctl and services would be.
  auto client = connect(server.url(), "bench-client", true);
  const std::int64_t reported = repos / 2;
  report_health(client.get(), repos, reported);

  PageReplier replier;
  auto replier_conn = connect(server.url(), "bench-baseline-replier", true);
  natsSubscription* raw = nullptr;
  check(natsConnection_Subscribe(&raw, replier_conn.get(), kBaselineSubject,
                                 &PageReplier::on_request, &replier),
        "subscribe");
  Subscription sub(raw);
  check(natsConnection_Flush(replier_conn.get()), "flush");

  fmt::print("  {} repos ({} reported): orgd ready {:.2f} s after the config load began\n",
             grouped(static_cast<std::uint64_t>(repos)),
             grouped(static_cast<std::uint64_t>(reported)), startup_s);
  const std::string subject = fmt::format("org.{}.api.status", kOrg);
  std::vector<Figure> out;
  for (auto size : p.page_sizes) {
    out.push_back(measure(p, client.get(), replier, subject, repos, size));
  }
  sub.reset();
  daemon.stop();
  return out;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_status_rtt [--repos R,...=1000,10000] [--page-size S,...=500,5000] "
        "[--pages N=1000] [--warmup W=2]\n"
        "  N: page requests a side for each repos × page size (whole walks, at least 3)\n"
        "(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  Params p;
  p.repos = flags.integers("repos", {1000, 10000}, 1, 100'000);
  p.page_sizes = flags.integers("page-size", {500, 5000}, 1, 5000);
  p.pages = flags.integer("pages", 1000, 1, 10'000'000);
  p.warmup = flags.integer("warmup", 2, 0, 1'000'000);

  logging::setup(LogConfig{"warn", "text"});
  fmt::print(
      "bench_status_rtt: P.api.status walked page by page (orgd's pages vs a bare replier's of "
      "the same sizes), alternating walks, half the repos reported\nmachine: {}\n",
      machine_summary());
  std::fflush(stdout);
  std::vector<Figure> all;
  for (auto repos : p.repos) {
    auto figures = measure_org(p, repos);
    all.insert(all.end(), figures.begin(), figures.end());
  }
  // How each figure grows with the org: the largest org against the smallest, per page size.
  if (p.repos.size() > 1) {
    const auto [lo, hi] = std::minmax_element(p.repos.begin(), p.repos.end());
    for (auto size : p.page_sizes) {
      const Figure* a = nullptr;
      const Figure* b = nullptr;
      for (const auto& f : all) {
        if (f.page_size != size) continue;
        if (f.repos == *lo) a = &f;
        if (f.repos == *hi) b = &f;
      }
      if (a == nullptr || b == nullptr || a == b) continue;
      fmt::print(
          "  growth {} → {} repos, pages of {}: orgd walk ×{:.1f} (baseline ×{:.1f}), orgd page "
          "p50 ×{:.2f}; ratio orgd/baseline {:.2f} → {:.2f}\n",
          grouped(static_cast<std::uint64_t>(*lo)), grouped(static_cast<std::uint64_t>(*hi)), size,
          b->orgd_walk / a->orgd_walk, b->base_walk / a->base_walk, b->orgd_p50 / a->orgd_p50,
          a->orgd_walk / a->base_walk, b->orgd_walk / b->base_walk);
    }
  }
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
