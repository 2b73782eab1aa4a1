#pragma once

// The two sets of threads deploys run on: the deploy executor (every run's decisions, record
// writes and timers) and the provider call threads (calls that block for as long as the provider
// takes), and the time the deploy parts wait by (DeployTimers). Every strand of a run is made
// from the executor here, every timer on one of them.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/core/metrics.hpp"

namespace orgd::deploy {

// A run's strand: its decisions, its steps and their timers run on it, one at a time.
using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

// Monotonic time and waits for the deploy parts (polls, retry backoff, the health gate, a run's
// tick and lease renewals, provider call deadlines): asio's steady timers in orgd
// (AsioDeployTimers); tests give timers whose time moves only when the test moves it.
class DeployTimers {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  // `cancelled`: the wait was cancelled (or replaced) before it was due.
  using Handler = std::function<void(bool cancelled)>;

  // One wait. cancel(), or destroying it, runs its handler on its strand with cancelled = true,
  // unless it is due already (then its handler runs as due).
  class Wait {
   public:
    virtual ~Wait() = default;
    virtual void cancel() = 0;
  };

  virtual ~DeployTimers() = default;
  virtual time_point now() const = 0;
  // Runs `handler` on `strand` once `when` has come, or once the wait is cancelled.
  virtual std::unique_ptr<Wait> wait_until(const Strand& strand, time_point when,
                                           Handler handler) = 0;
};

// orgd's: the steady clock, and an asio steady_timer per wait.
class AsioDeployTimers final : public DeployTimers {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  std::unique_ptr<Wait> wait_until(const Strand& strand, time_point when, Handler handler) override;
};

// A timer on a strand, used on that strand only: one wait at a time, a new wait cancelling the
// one before (as an asio timer's expires_at does).
class Timer {
 public:
  Timer(std::shared_ptr<DeployTimers> timers, Strand strand)
      : timers_(std::move(timers)), strand_(std::move(strand)) {}

  void wait_until(DeployTimers::time_point when, DeployTimers::Handler handler) {
    cancel();
    wait_ = timers_->wait_until(strand_, when, std::move(handler));
  }
  void wait_for(DeployTimers::duration d, DeployTimers::Handler handler) {
    wait_until(timers_->now() + d, std::move(handler));
  }
  void cancel() {
    if (wait_) wait_->cancel();
  }

 private:
  std::shared_ptr<DeployTimers> timers_;
  Strand strand_;
  std::unique_ptr<DeployTimers::Wait> wait_;
};

// A fixed set of threads that run every deploy's decisions, record writes and timers (each
// DeployRun on its own strand). Waiting is done by timers (DeployTimers), so a step polling its
// provider, backing off before a retry or waiting for its health gate holds no thread; work that
// blocks (a KV call, bounded by the JetStream timeout) holds one for its duration. Held by
// shared_ptr from its own threads, so threads left behind by a bounded stop() still find it.
class DeployExecutor : public std::enable_shared_from_this<DeployExecutor> {
 public:
  static std::shared_ptr<DeployExecutor> create(int threads, Gauge& gauge);
  // One without threads of its own (tests): its owner runs the handlers (run_ready()) until it
  // hands them to a thread (start_thread()), to stop as orgd does.
  static std::shared_ptr<DeployExecutor> create_driven(Gauge& gauge);

  // Driven: runs the handlers that are ready, and those they make ready; how many ran.
  std::size_t run_ready() { return io_.poll(); }
  // Driven: from now on a thread of its own runs the handlers (not while stop() runs).
  void start_thread();

  boost::asio::io_context& context() { return io_; }
  Strand make_strand() { return boost::asio::make_strand(io_); }
  bool stopped() const { return stopped_.load(); }

  // A thread still inside a handler at `deadline` (a KV call that NATS does not answer) is left
  // to finish on its own, counted in `abandoned`. Otherwise the handlers still queued (runs that
  // have ended: cancelled timers) run here once, so none keeps its run, and with it this
  // executor, alive.
  void stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned);

 private:
  DeployExecutor();

  void work();

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;  // guards live_, and threads_ while start_thread() adds one
  std::condition_variable cv_;
  int live_ = 0;
  std::atomic<bool> stopped_{false};
};

// Where the deploy parts run and wait. In orgd both are left empty: the executor gets
// options.executor_threads threads, the timers are AsioDeployTimers. Tests give an executor they
// drive (DeployExecutor::create_driven) and timers whose time they move.
struct DeployRuntime {
  std::shared_ptr<DeployExecutor> executor;
  std::shared_ptr<DeployTimers> timers;
};

// Provider calls run here, off the executor: a call blocks for as long as the provider takes (an
// exec command runs to completion inside start()). At most `max_threads` threads, started on
// demand and kept until stop(): an exec command dies with the thread that forked it
// (PR_SET_PDEATHSIG), so a thread must outlive its calls. The caller waits on a timer, not on the
// call; a call past its deadline keeps its thread until it returns (StepRunner counts it as hung),
// so hung providers take at most `max_threads` threads and later calls queue.
class ProviderCalls : public std::enable_shared_from_this<ProviderCalls> {
 public:
  ProviderCalls(std::size_t max_threads, Gauge& gauge)
      : max_threads_(std::max<std::size_t>(1, max_threads)), gauge_(gauge) {}

  void submit(std::function<void()> job);

  // Calls queued or being made now; waits until at most `n` are, or `until` (a test waits for
  // its calls to come back: their answers are posted to their strands by then).
  std::size_t in_flight() const;
  bool wait_in_flight(std::size_t n, std::chrono::steady_clock::time_point until) const;

  // Queued calls are dropped; threads still in a call at `deadline` are left to it.
  void stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned);

 private:
  void work();

  const std::size_t max_threads_;
  Gauge& gauge_;
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable cv_;
  mutable std::condition_variable call_ended_cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  int live_ = 0;
  int idle_ = 0;
  std::size_t calling_ = 0;  // threads inside a call
  bool stopping_ = false;
};

}  // namespace orgd::deploy
