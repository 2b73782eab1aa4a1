#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "daemon/deploy/deploy_executor.hpp"

namespace orgd::testing {

// Deploy timers whose time moves only when the test moves it (set_now), so polls, retry
// backoffs, health gate soaks and provider call deadlines are testable without waiting. A wait
// that comes due has its handler posted to its strand, earliest first; the test's driven
// executor runs it. Thread-safe (runs cancel their waits from the executor's thread).
class ManualTimers final : public deploy::DeployTimers {
 public:
  explicit ManualTimers(time_point start = time_point{std::chrono::hours{1}});
  ~ManualTimers() override;

  time_point now() const override;
  std::unique_ptr<Wait> wait_until(const deploy::Strand& strand, time_point when,
                                   Handler handler) override;

  // When the earliest wait armed comes due.
  std::optional<time_point> next_due() const;
  // Moves time to `t` (never back) and posts the handlers of every wait due by then; how many.
  std::size_t set_now(time_point t);
  // Posts the handlers of the waits due now.
  std::size_t fire_due() { return set_now(now()); }
  std::size_t armed() const;
  // Drops every wait armed without running it (at a test's end, once its runs have stopped).
  void clear();

 private:
  struct Armed {
    deploy::Strand strand;
    Handler handler;
  };
  using Key = std::pair<time_point, std::uint64_t>;  // due, then the order they were armed in
  struct State {
    mutable std::mutex mutex;  // guards everything below
    time_point now;
    std::uint64_t next_id = 0;
    std::map<Key, Armed> waits;
  };
  class ManualWait;

  std::shared_ptr<State> state_;
};

}  // namespace orgd::testing
