#include "daemon/deploy/deploy_executor.hpp"

#include <algorithm>

#include "daemon/core/logging.hpp"

namespace orgd::deploy {

namespace asio = boost::asio;

namespace {

class AsioWait final : public DeployTimers::Wait {
 public:
  AsioWait(const Strand& strand, DeployTimers::time_point when, DeployTimers::Handler handler)
      : timer_(strand, when) {
    timer_.async_wait([handler = std::move(handler)](const boost::system::error_code& ec) {
      handler(ec == asio::error::operation_aborted);
    });
  }
  void cancel() override { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

}  // namespace

std::unique_ptr<DeployTimers::Wait> AsioDeployTimers::wait_until(const Strand& strand,
                                                                 time_point when, Handler handler) {
  return std::make_unique<AsioWait>(strand, when, std::move(handler));
}

std::shared_ptr<DeployExecutor> DeployExecutor::create(int threads, Gauge& gauge) {
  std::shared_ptr<DeployExecutor> executor{new DeployExecutor()};
  const int n = std::max(1, threads);
  for (int i = 0; i < n; ++i) {
    executor->threads_.emplace_back([executor] { executor->work(); });
  }
  executor->live_ = n;
  gauge.set(n);
  return executor;
}

std::shared_ptr<DeployExecutor> DeployExecutor::create_driven(Gauge& gauge) {
  gauge.set(0);
  return std::shared_ptr<DeployExecutor>{new DeployExecutor()};
}

void DeployExecutor::start_thread() {
  std::lock_guard lock(mutex_);
  ++live_;
  threads_.emplace_back([self = shared_from_this()] { self->work(); });
}

void DeployExecutor::stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned) {
  stopped_.store(true);
  work_.reset();
  io_.stop();
  std::unique_lock lock(mutex_);
  const bool all_done = cv_.wait_until(lock, deadline, [&] { return live_ == 0; });
  if (!all_done) abandoned.inc(live_);
  lock.unlock();
  for (auto& thread : threads_) {
    if (!thread.joinable()) continue;
    if (all_done) {
      thread.join();
    } else {
      thread.detach();
    }
  }
  if (all_done) {
    io_.restart();
    io_.poll();
  }
}

DeployExecutor::DeployExecutor() : work_(asio::make_work_guard(io_)) {}

void DeployExecutor::work() {
  for (;;) {
    try {
      io_.run();
      break;
    } catch (const std::exception& e) {
      logging::get("deploy")->error("deploy executor: a handler threw: {}", e.what());
    }
  }
  std::lock_guard lock(mutex_);
  --live_;
  cv_.notify_all();
}

void ProviderCalls::submit(std::function<void()> job) {
  std::lock_guard lock(mutex_);
  if (stopping_) return;  // the caller's deadline answers it
  queue_.push_back(std::move(job));
  if (idle_ == 0 && threads_.size() < max_threads_) {
    ++live_;
    threads_.emplace_back([self = shared_from_this()] { self->work(); });
    gauge_.set(static_cast<double>(threads_.size()));
  }
  cv_.notify_one();
}

std::size_t ProviderCalls::in_flight() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + calling_;
}

bool ProviderCalls::wait_in_flight(std::size_t n,
                                   std::chrono::steady_clock::time_point until) const {
  std::unique_lock lock(mutex_);
  return call_ended_cv_.wait_until(lock, until, [&] { return queue_.size() + calling_ <= n; });
}

void ProviderCalls::stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned) {
  std::unique_lock lock(mutex_);
  stopping_ = true;
  queue_.clear();
  cv_.notify_all();
  const bool all_done = cv_.wait_until(lock, deadline, [&] { return live_ == 0; });
  if (!all_done) abandoned.inc(live_);
  std::vector<std::thread> threads;
  threads.swap(threads_);
  lock.unlock();
  for (auto& thread : threads) {
    if (all_done) {
      thread.join();
    } else {
      thread.detach();
    }
  }
}

void ProviderCalls::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_;
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (stopping_) break;
    auto job = std::move(queue_.front());
    queue_.pop_front();
    ++calling_;
    lock.unlock();
    job();
    lock.lock();
    --calling_;
    call_ended_cv_.notify_all();
  }
  --live_;
  cv_.notify_all();
}

}  // namespace orgd::deploy
