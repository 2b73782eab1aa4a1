#pragma once

// The two sets of threads deploys run on: the deploy executor (every run's decisions, record
// writes and timers) and the provider call threads (calls that block for as long as the provider
// takes). Every strand and timer of a run is made from the executor here.

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

// A run's strand, and the timers on it (polls, retry backoff, the health gate, the run's tick).
using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
using Timer = boost::asio::steady_timer;

// A fixed set of threads that run every deploy's decisions, record writes and timers (each
// DeployRun on its own strand). Waiting is done by asio timers, so a step polling its provider,
// backing off before a retry or waiting for its health gate holds no thread; work that blocks
// (a KV call, bounded by the JetStream timeout) holds one for its duration. Held by shared_ptr
// from its own threads, so threads left behind by a bounded stop() still find it.
class DeployExecutor : public std::enable_shared_from_this<DeployExecutor> {
 public:
  static std::shared_ptr<DeployExecutor> create(int threads, Gauge& gauge);

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
  std::mutex mutex_;  // guards live_
  std::condition_variable cv_;
  int live_ = 0;
  std::atomic<bool> stopped_{false};
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

  // Queued calls are dropped; threads still in a call at `deadline` are left to it.
  void stop(std::chrono::steady_clock::time_point deadline, Counter& abandoned);

 private:
  void work();

  const std::size_t max_threads_;
  Gauge& gauge_;
  std::mutex mutex_;  // guards everything below
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  int live_ = 0;
  int idle_ = 0;
  bool stopping_ = false;
};

}  // namespace orgd::deploy
