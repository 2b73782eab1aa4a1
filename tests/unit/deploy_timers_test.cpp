// The timers deploy runs wait on, orgd's (asio's steady timers) and the tests' (manual time), as
// the runs rely on them: a wait's handler runs once, on its strand, when due or when cancelled;
// a new wait on a Timer cancels the one before, as does destroying the Timer.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <vector>

#include "daemon/deploy/deploy_executor.hpp"
#include "tests/support/manual_timers.hpp"

namespace orgd::testing {
namespace {

using namespace std::chrono_literals;
using deploy::DeployTimers;

class DeployTimersTest : public ::testing::TestWithParam<bool> {
 protected:
  DeployTimersTest()
      : executor_(deploy::DeployExecutor::create_driven(gauge_)),
        strand_(executor_->make_strand()) {
    if (manual()) {
      manual_ = std::make_shared<ManualTimers>();
      timers_ = manual_;
    } else {
      timers_ = std::make_shared<deploy::AsioDeployTimers>();
    }
  }
  ~DeployTimersTest() override { executor_->run_ready(); }

  bool manual() const { return GetParam(); }
  // A time at which a wait is due once come_due() has run.
  DeployTimers::time_point due_time() const {
    return manual() ? timers_->now() + 1s : timers_->now() - 1ms;
  }
  void come_due() {
    if (manual()) manual_->set_now(manual_->now() + 1s);
    executor_->run_ready();
  }
  DeployTimers::Handler record(std::vector<bool>& into) {
    return [&into](bool cancelled) { into.push_back(cancelled); };
  }

  Gauge gauge_;
  std::shared_ptr<deploy::DeployExecutor> executor_;
  deploy::Strand strand_;
  std::shared_ptr<ManualTimers> manual_;
  std::shared_ptr<DeployTimers> timers_;
};

TEST_P(DeployTimersTest, ADueWaitRunsItsHandlerOnce) {
  std::vector<bool> ran;
  auto wait = timers_->wait_until(strand_, due_time(), record(ran));
  come_due();
  EXPECT_EQ(ran, std::vector<bool>{false});
  wait.reset();
  executor_->run_ready();
  EXPECT_EQ(ran, std::vector<bool>{false}) << "destroying it after it ran changes nothing";
}

TEST_P(DeployTimersTest, ACancelledWaitRunsItsHandlerAsCancelled) {
  std::vector<bool> ran;
  auto wait = timers_->wait_until(strand_, timers_->now() + 1h, record(ran));
  executor_->run_ready();
  EXPECT_TRUE(ran.empty());
  wait->cancel();
  executor_->run_ready();
  EXPECT_EQ(ran, std::vector<bool>{true});
  wait->cancel();
  come_due();
  EXPECT_EQ(ran, std::vector<bool>{true}) << "once";
}

TEST_P(DeployTimersTest, ANewWaitOnATimerCancelsTheOneBefore) {
  std::vector<bool> first;
  std::vector<bool> second;
  {
    deploy::Timer timer(timers_, strand_);
    timer.wait_until(timers_->now() + 1h, record(first));
    timer.wait_until(due_time(), record(second));
    come_due();
    EXPECT_EQ(first, std::vector<bool>{true});
    EXPECT_EQ(second, std::vector<bool>{false});
    std::vector<bool> third;
    timer.wait_for(1h, record(third));
    executor_->run_ready();
    EXPECT_TRUE(third.empty());
    timer.cancel();
    executor_->run_ready();
    EXPECT_EQ(third, std::vector<bool>{true});
  }
  std::vector<bool> last;
  {
    deploy::Timer timer(timers_, strand_);
    timer.wait_for(1h, record(last));
  }
  executor_->run_ready();
  EXPECT_EQ(last, std::vector<bool>{true}) << "destroying the timer cancels its wait";
}

INSTANTIATE_TEST_SUITE_P(AsioAndManual, DeployTimersTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Manual" : "Asio";
                         });

TEST(ManualTimers, DueWaitsRunEarliestFirstAndOnlyWhenTimeIsMoved) {
  Gauge gauge;
  auto executor = deploy::DeployExecutor::create_driven(gauge);
  auto strand = executor->make_strand();
  auto timers = std::make_shared<ManualTimers>();
  const auto start = timers->now();
  std::vector<int> order;
  auto late = timers->wait_until(strand, start + 2s, [&](bool) { order.push_back(2); });
  auto early = timers->wait_until(strand, start + 1s, [&](bool) { order.push_back(1); });
  EXPECT_EQ(timers->next_due(), start + 1s);
  executor->run_ready();
  EXPECT_TRUE(order.empty()) << "time has not moved";
  EXPECT_EQ(timers->set_now(start + 5s), 2u);
  executor->run_ready();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(timers->armed(), 0u);
  EXPECT_FALSE(timers->next_due());
  timers->set_now(start);
  EXPECT_EQ(timers->now(), start + 5s) << "time never moves back";
}

}  // namespace
}  // namespace orgd::testing
