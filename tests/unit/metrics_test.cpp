#include "daemon/core/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace orgd {
namespace {

TEST(MetricsRegistry, RendersCountersAndGaugesSortedByName) {
  MetricsRegistry registry;
  registry.gauge("orgd_up", "Whether the daemon is up.").set(1);
  auto& published = registry.counter("orgd_events_total", "Events published.",
                                     {{"kind", "push"}, {"repo", "acme/api"}});
  published.inc();
  published.inc(2);
  registry.counter("orgd_events_total", "Events published.", {{"kind", "deploy"}, {"repo", "a"}})
      .inc(0.5);

  EXPECT_EQ(registry.render(),
            "# HELP orgd_events_total Events published.\n"
            "# TYPE orgd_events_total counter\n"
            "orgd_events_total{kind=\"deploy\",repo=\"a\"} 0.5\n"
            "orgd_events_total{kind=\"push\",repo=\"acme/api\"} 3\n"
            "# HELP orgd_up Whether the daemon is up.\n"
            "# TYPE orgd_up gauge\n"
            "orgd_up 1\n");
}

TEST(MetricsRegistry, EscapesHelpAndLabelValues) {
  MetricsRegistry registry;
  registry
      .counter("weird_total", "Back\\slash and\nnewline \"quoted\"", {{"path", "C:\\dir\n\"x\""}})
      .inc();

  EXPECT_EQ(registry.render(),
            "# HELP weird_total Back\\\\slash and\\nnewline \"quoted\"\n"
            "# TYPE weird_total counter\n"
            "weird_total{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
}

TEST(MetricsRegistry, RendersHistogramBucketsCumulatively) {
  MetricsRegistry registry;
  // Bounds given out of order; values chosen to be exact in binary so the sum is exact.
  auto& h = registry.histogram("orgd_request_seconds", "Request latency.", {0.5, 0.125, 1},
                               {{"route", "/metrics"}});
  h.observe(0.0625);  // <= 0.125
  h.observe(0.125);   // a value on a bound belongs to that bucket
  h.observe(0.75);    // <= 1
  h.observe(3);       // +Inf only

  EXPECT_EQ(registry.render(),
            "# HELP orgd_request_seconds Request latency.\n"
            "# TYPE orgd_request_seconds histogram\n"
            "orgd_request_seconds_bucket{route=\"/metrics\",le=\"0.125\"} 2\n"
            "orgd_request_seconds_bucket{route=\"/metrics\",le=\"0.5\"} 2\n"
            "orgd_request_seconds_bucket{route=\"/metrics\",le=\"1\"} 3\n"
            "orgd_request_seconds_bucket{route=\"/metrics\",le=\"+Inf\"} 4\n"
            "orgd_request_seconds_sum{route=\"/metrics\"} 3.9375\n"
            "orgd_request_seconds_count{route=\"/metrics\"} 4\n");
}

TEST(MetricsRegistry, HistogramSumAndCountCarryTheLabels) {
  MetricsRegistry registry;
  auto& h = registry.histogram("lat_seconds", "L.", {1}, {{"op", "x"}});
  h.observe(0.5);
  auto& bare = registry.histogram("bare_seconds", "B.", {});
  bare.observe(2);

  EXPECT_EQ(registry.render(),
            "# HELP bare_seconds B.\n"
            "# TYPE bare_seconds histogram\n"
            "bare_seconds_bucket{le=\"+Inf\"} 1\n"
            "bare_seconds_sum 2\n"
            "bare_seconds_count 1\n"
            "# HELP lat_seconds L.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{op=\"x\",le=\"1\"} 1\n"
            "lat_seconds_bucket{op=\"x\",le=\"+Inf\"} 1\n"
            "lat_seconds_sum{op=\"x\"} 0.5\n"
            "lat_seconds_count{op=\"x\"} 1\n");
}

TEST(MetricsRegistry, LatencyBoundsRenderAsPrometheusDoes) {
  MetricsRegistry registry;
  registry.histogram("l_seconds", "L.", MetricsRegistry::latency_bounds());
  const std::string text = registry.render();
  for (const char* le : {"5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                         "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}) {
    EXPECT_NE(text.find(std::string("l_seconds_bucket{le=\"") + le + "\"} 0\n"), std::string::npos)
        << le << " in\n"
        << text;
  }
  EXPECT_EQ(MetricsRegistry::latency_bounds().size(), 17u);
}

TEST(MetricsRegistry, FormatsSpecialAndLargeNumbers) {
  MetricsRegistry registry;
  registry.gauge("a_inf", "I.").set(std::numeric_limits<double>::infinity());
  registry.gauge("b_neg_inf", "I.").set(-std::numeric_limits<double>::infinity());
  registry.gauge("c_nan", "N.").set(std::numeric_limits<double>::quiet_NaN());
  registry.gauge("d_big", "B.").set(1e15);
  registry.gauge("e_negative", "N.").set(-42);
  registry.gauge("f_third", "T.").set(1.0 / 3.0);
  registry.gauge("g_huge", "H.").set(1e300);

  EXPECT_EQ(registry.render(),
            "# HELP a_inf I.\n# TYPE a_inf gauge\na_inf +Inf\n"
            "# HELP b_neg_inf I.\n# TYPE b_neg_inf gauge\nb_neg_inf -Inf\n"
            "# HELP c_nan N.\n# TYPE c_nan gauge\nc_nan NaN\n"
            "# HELP d_big B.\n# TYPE d_big gauge\nd_big 1000000000000000\n"
            "# HELP e_negative N.\n# TYPE e_negative gauge\ne_negative -42\n"
            "# HELP f_third T.\n# TYPE f_third gauge\nf_third 0.3333333333333333\n"
            "# HELP g_huge H.\n# TYPE g_huge gauge\ng_huge 1e+300\n");
}

TEST(MetricsRegistry, SameNameAndLabelsReturnTheSameObject) {
  MetricsRegistry registry;
  Counter& a = registry.counter("c_total", "C.", {{"x", "1"}, {"y", "2"}});
  Counter& b = registry.counter("c_total", "C.", {{"y", "2"}, {"x", "1"}});
  Counter& other = registry.counter("c_total", "C.", {{"x", "2"}, {"y", "2"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &other);
  Histogram& h1 = registry.histogram("h_seconds", "H.", {1, 2});
  Histogram& h2 = registry.histogram("h_seconds", "H.", {1, 2});
  EXPECT_EQ(&h1, &h2);
  EXPECT_EQ(&registry.gauge("g", "G."), &registry.gauge("g", "G."));
}

TEST(MetricsRegistry, KindMismatchThrows) {
  MetricsRegistry registry;
  registry.counter("thing", "T.");
  EXPECT_THROW(registry.gauge("thing", "T."), std::logic_error);
  EXPECT_THROW(registry.histogram("thing", "T.", {1}), std::logic_error);
  registry.gauge("level", "L.", {{"a", "b"}});
  EXPECT_THROW(registry.counter("level", "L.", {{"a", "c"}}), std::logic_error);
  // The failed registrations left nothing behind.
  EXPECT_EQ(registry.render(),
            "# HELP level L.\n# TYPE level gauge\nlevel{a=\"b\"} 0\n"
            "# HELP thing T.\n# TYPE thing counter\nthing 0\n");
}

TEST(MetricsRegistry, RejectsInvalidNamesAndLabels) {
  MetricsRegistry registry;
  EXPECT_THROW(registry.counter("1abc", "X."), std::invalid_argument);
  EXPECT_THROW(registry.counter("a-b", "X."), std::invalid_argument);
  EXPECT_THROW(registry.counter("ok", "X.", {{"bad-name", "v"}}), std::invalid_argument);
  EXPECT_THROW(registry.counter("ok", "X.", {{"a", "1"}, {"a", "2"}}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "X.", {1}, {{"le", "1"}}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h2", "X.", {1, std::nan("")}), std::invalid_argument);
  registry.histogram("h3", "X.", {1});
  EXPECT_THROW(registry.histogram("h3", "X.", {2}), std::logic_error);
  EXPECT_EQ(registry.render(),
            "# HELP h3 X.\n# TYPE h3 histogram\n"
            "h3_bucket{le=\"1\"} 0\nh3_bucket{le=\"+Inf\"} 0\nh3_sum 0\nh3_count 0\n");
}

TEST(Histogram, SnapshotIsCumulativeAndIgnoresExplicitInf) {
  Histogram h({2, 1, 1, std::numeric_limits<double>::infinity()});
  h.observe(0.5);
  h.observe(1.5);
  h.observe(std::numeric_limits<double>::quiet_NaN());
  const auto s = h.snapshot();
  EXPECT_EQ(s.bounds, (std::vector<double>{1, 2}));
  EXPECT_EQ(s.cumulative, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.count, 3u);
  EXPECT_TRUE(std::isnan(s.sum));
}

TEST(MetricsRegistry, ConcurrentUpdatesGiveExactTotals) {
  MetricsRegistry registry;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&registry, t] {
      // Registration races with updates and rendering, as it does in the daemon.
      Counter& c = registry.counter("ops_total", "Ops.");
      Gauge& g = registry.gauge("inflight", "In flight.");
      Histogram& h = registry.histogram("op_seconds", "Op latency.", {0.5, 1});
      Counter& mine =
          registry.counter("per_thread_total", "Per thread.", {{"thread", std::to_string(t)}});
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        mine.inc();
        g.inc();
        g.dec();
        h.observe(i % 2 == 0 ? 0.25 : 0.75);
        if (i % 5000 == 0) (void)registry.render();
      }
    });
  }
  for (auto& t : threads) t.join();

  constexpr double kTotal = double{kThreads} * kPerThread;
  EXPECT_EQ(registry.counter("ops_total", "Ops.").value(), kTotal);
  EXPECT_EQ(registry.gauge("inflight", "In flight.").value(), 0);
  const auto s = registry.histogram("op_seconds", "Op latency.", {0.5, 1}).snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<std::uint64_t>{static_cast<std::uint64_t>(kTotal / 2),
                                                      static_cast<std::uint64_t>(kTotal),
                                                      static_cast<std::uint64_t>(kTotal)}));
  EXPECT_EQ(s.count, static_cast<std::uint64_t>(kTotal));
  EXPECT_DOUBLE_EQ(s.sum, kTotal / 2 * 0.25 + kTotal / 2 * 0.75);  // exact in binary
  const std::string text = registry.render();
  EXPECT_NE(text.find("ops_total 160000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_count 160000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("per_thread_total{thread=\"7\"} 20000\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace orgd
