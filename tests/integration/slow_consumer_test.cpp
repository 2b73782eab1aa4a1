// A subscription whose handler falls behind a flood, against a real nats-server: every message
// nats.c drops is counted per subscription, and the log gets a few lines, not one per drop
// episode.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/core/logging.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/wait.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::connect_client;
using testing::NatsServer;
using testing::wait_until;

// Counts the lines a logger writes that contain `needle`.
class CountingSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit CountingSink(std::string needle) : needle_(std::move(needle)) {}
  int count() const { return count_.load(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (std::string_view(msg.payload.data(), msg.payload.size()).find(needle_) !=
        std::string_view::npos) {
      ++count_;
    }
  }
  void flush_() override {}

 private:
  std::string needle_;
  std::atomic<int> count_{0};
};

TEST(SlowConsumerTest, DropsAreCountedPerSubscriptionAndWarningsAreRateLimited) {
  NatsServer server({.jetstream = false});
  auto sink = std::make_shared<CountingSink>("slow consumer");
  auto bus_log = logging::get("bus");
  bus_log->sinks().push_back(sink);

  MetricsRegistry metrics;
  NatsConnectionSettings settings;
  settings.urls = {server.url()};
  NatsConnection nats(settings);
  nats.set_metrics(metrics);
  nats.connect();
  ASSERT_TRUE(wait_until([&] { return nats.connected(); }, 10s));

  // A handler slower than the flood, with little room: nats.c keeps dropping and accepting,
  // and reports a new slow-consumer episode each time it starts dropping again.
  std::atomic<std::int64_t> handled{0};
  auto sub = nats.subscribe("flood.>", "",
                            [&](BusMessage) {
                              const auto until = std::chrono::steady_clock::now() + 20us;
                              while (std::chrono::steady_clock::now() < until) {
                              }
                              ++handled;
                            },
                            {.messages = 50, .bytes = 1 << 20});
  nats.flush(2s);

  constexpr std::int64_t kMessages = 300'000;
  auto client = connect_client(server.url());
  const auto started = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(natsConnection_PublishString(client.get(), "flood.x", "{}"), NATS_OK);
  }
  ASSERT_EQ(natsConnection_FlushTimeout(client.get(), 10'000), NATS_OK);
  // Every message is either handled or dropped.
  ASSERT_TRUE(wait_until([&] { return handled.load() + sub->dropped() == kMessages; }, 60s))
      << handled.load() << " handled, " << sub->dropped() << " dropped of " << kMessages;
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();

  ASSERT_GT(sub->dropped(), 0) << "the flood never overran the subscription";
  nats.refresh_dropped();
  EXPECT_EQ(
      metrics.counter("orgd_nats_slow_consumer_dropped_total", "", {{"subscription", "flood.>"}})
          .value(),
      static_cast<double>(sub->dropped()));
  // At most 10 lines per started second (the limiter's windows are whole seconds, so a run
  // touches at most seconds + 2 of them), however many episodes there were.
  EXPECT_GE(sink->count(), 1);
  EXPECT_LE(sink->count(), 10 * (seconds + 2)) << "over " << seconds << " s";

  sub.reset();
  nats.close();
  auto& sinks = bus_log->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
}

}  // namespace
}  // namespace orgd
