// Config load at the size of an org: a generated config of R repos (1,000 and 10,000 by
// default), each with a deploy target, health services and secret names, loaded through orgd's
// loader (load_config_string: parse, hostile-YAML guards, schema and validation) against the
// same text parsed by yaml-cpp alone (YAML::Load, nothing checked), alternating, in the same run.
//
//   bench_config_load [--repos R,...] [--runs N]
//
// Every flag also reads ORGD_BENCH_<FLAG> (e.g. ORGD_BENCH_RUNS=3; ORGD_BENCH_REPOS is shared
// with the other benchmarks).
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <iostream>

#include "bench/bench_support.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/logging.hpp"

namespace orgd::bench {
namespace {

// What a large org writes (the shape of tests/unit/config_test.cpp's large_org, plus a
// dependency on an earlier repo for every tenth one): 17 YAML nodes or so a repo.
std::string large_org(std::int64_t repos) {
  std::string yaml =
      "org: bench\nnats:\n  urls: [nats://127.0.0.1:4222]\nhttp:\n  enabled: false\n"
      "providers:\n  local: {type: local}\nrepos:\n";
  for (std::int64_t i = 0; i < repos; ++i) {
    yaml += fmt::format("  repo-{:05}:\n", i);
    if (i % 10 == 9) yaml += fmt::format("    depends_on: [repo-{:05}]\n", i - 9);
    yaml +=
        "    deploy:\n      production: {provider: local, duration: 1s}\n"
        "    health: {services: [http, worker, db], ttl: 30s}\n"
        "    secrets: [DATABASE_URL, SESSION_KEY, API_TOKEN]\n";
  }
  return yaml;
}

std::string seconds_text(double s) {
  return s >= 1 ? fmt::format("{:.2f} s", s) : fmt::format("{:.1f} ms", s * 1000);
}

struct Figure {
  std::int64_t repos = 0;
  double orgd_s = 0, base_s = 0;
};

Figure measure(std::int64_t repos, std::int64_t runs) {
  const std::string yaml = large_org(repos);
  std::vector<double> orgd_s, base_s;
  std::size_t loaded = 0, parsed = 0;
  // One untimed load of each first (allocator, page faults).
  for (std::int64_t i = -1; i < runs; ++i) {
    const bool orgd_first = i % 2 == 0;
    for (int side = 0; side < 2; ++side) {
      const bool orgd = (side == 0) == orgd_first;
      const auto start = SteadyClock::now();
      if (orgd) {
        const Config c = load_config_string(yaml, "bench_config_load", Environment());
        const double s = seconds_since(start);
        loaded = c.repos.size();
        if (i >= 0) orgd_s.push_back(s);
      } else {
        const YAML::Node root = YAML::Load(yaml);
        const double s = seconds_since(start);
        parsed = root["repos"].size();
        if (i >= 0) base_s.push_back(s);
      }
    }
  }
  if (loaded != static_cast<std::size_t>(repos) || parsed != static_cast<std::size_t>(repos)) {
    throw std::runtime_error(fmt::format("{} repos generated, orgd loaded {}, yaml-cpp parsed {}",
                                         repos, loaded, parsed));
  }
  Figure f{repos, median(orgd_s), median(base_s)};
  fmt::print(
      "  {:>6} repos, {} bytes of YAML, {} runs a side:\n"
      "    baseline  yaml-cpp YAML::Load alone      : {:>9}\n"
      "    orgd      load_config_string (validated) : {:>9}  ({:.1f} µs a repo)\n"
      "    ratio orgd/baseline: {:.2f}  (medians)\n",
      grouped(static_cast<std::uint64_t>(repos)), grouped(yaml.size()), runs,
      seconds_text(f.base_s), seconds_text(f.orgd_s), f.orgd_s * 1e6 / static_cast<double>(repos),
      f.orgd_s / f.base_s);
  std::fflush(stdout);
  return f;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  if (flags.help()) {
    std::puts(
        "bench_config_load [--repos R,...=1000,10000] [--runs N=5]\n"
        "(each flag also from ORGD_BENCH_<FLAG>)");
    return 0;
  }
  const auto sizes = flags.integers("repos", {1000, 10000}, 1, 100'000);
  const auto runs = flags.integer("runs", 5, 1, 1000);
  logging::setup(LogConfig{"warn", "text"});
  fmt::print(
      "bench_config_load: a generated config (each repo: a deploy target, 3 health services, 3 "
      "secret names; every tenth a dependency) through orgd's loader vs yaml-cpp's parse alone, "
      "alternating\nmachine: {}\n",
      machine_summary());
  std::vector<Figure> all;
  for (auto repos : sizes) all.push_back(measure(repos, runs));
  if (all.size() > 1) {
    const Figure& a = all.front();
    const Figure& b = all.back();
    fmt::print(
        "  growth {} → {} repos (×{:.0f}): orgd ×{:.1f}, baseline ×{:.1f}; ratio orgd/baseline "
        "{:.2f} → {:.2f}\n",
        grouped(static_cast<std::uint64_t>(a.repos)), grouped(static_cast<std::uint64_t>(b.repos)),
        static_cast<double>(b.repos) / static_cast<double>(a.repos), b.orgd_s / a.orgd_s,
        b.base_s / a.base_s, a.orgd_s / a.base_s, b.orgd_s / b.base_s);
  }
  return 0;
}

}  // namespace
}  // namespace orgd::bench

int main(int argc, char** argv) {
  try {
    return orgd::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_config_load: " << e.what() << "\n";
    return 2;
  }
}
