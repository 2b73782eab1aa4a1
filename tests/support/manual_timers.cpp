#include "tests/support/manual_timers.hpp"

#include <boost/asio/post.hpp>
#include <vector>

namespace orgd::testing {

class ManualTimers::ManualWait final : public deploy::DeployTimers::Wait {
 public:
  ManualWait(std::weak_ptr<State> state, Key key) : state_(std::move(state)), key_(key) {}
  ~ManualWait() override { cancel(); }

  void cancel() override {
    auto state = state_.lock();
    if (!state) return;
    std::unique_lock lock(state->mutex);
    auto it = state->waits.find(key_);
    if (it == state->waits.end()) return;  // due already: its handler runs as due
    Armed armed = std::move(it->second);
    state->waits.erase(it);
    lock.unlock();
    boost::asio::post(armed.strand, [handler = std::move(armed.handler)] { handler(true); });
  }

 private:
  std::weak_ptr<State> state_;
  Key key_;
};

ManualTimers::ManualTimers(time_point start) : state_(std::make_shared<State>()) {
  state_->now = start;
}

ManualTimers::~ManualTimers() { clear(); }

ManualTimers::time_point ManualTimers::now() const {
  std::lock_guard lock(state_->mutex);
  return state_->now;
}

std::unique_ptr<deploy::DeployTimers::Wait> ManualTimers::wait_until(const deploy::Strand& strand,
                                                                     time_point when,
                                                                     Handler handler) {
  std::lock_guard lock(state_->mutex);
  const Key key{when, state_->next_id++};
  state_->waits.emplace(key, Armed{strand, std::move(handler)});
  return std::make_unique<ManualWait>(state_, key);
}

std::optional<ManualTimers::time_point> ManualTimers::next_due() const {
  std::lock_guard lock(state_->mutex);
  if (state_->waits.empty()) return std::nullopt;
  return state_->waits.begin()->first.first;
}

std::size_t ManualTimers::set_now(time_point t) {
  std::vector<Armed> due;
  {
    std::lock_guard lock(state_->mutex);
    if (t > state_->now) state_->now = t;
    while (!state_->waits.empty() && state_->waits.begin()->first.first <= state_->now) {
      due.push_back(std::move(state_->waits.begin()->second));
      state_->waits.erase(state_->waits.begin());
    }
  }
  for (auto& armed : due) {
    boost::asio::post(armed.strand, [handler = std::move(armed.handler)] { handler(false); });
  }
  return due.size();
}

std::size_t ManualTimers::armed() const {
  std::lock_guard lock(state_->mutex);
  return state_->waits.size();
}

void ManualTimers::clear() {
  std::map<Key, Armed> dropped;
  {
    std::lock_guard lock(state_->mutex);
    dropped.swap(state_->waits);
  }
}

}  // namespace orgd::testing
