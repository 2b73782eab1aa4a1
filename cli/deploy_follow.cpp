#include "cli/deploy_follow.hpp"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mutex>
#include <optional>

#include "daemon/events/codec.hpp"

namespace orgd::cli {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A safety net, not the main channel: events normally arrive well before the next poll.
constexpr milliseconds kPollInterval{2000};
constexpr milliseconds kTick{1000};  // the live view's elapsed times move once a second
constexpr milliseconds kInterruptCheck{200};
// Consecutive failed polls (each bounded by --timeout) before orgd counts as gone.
constexpr int kMaxPollFailures = 5;
constexpr std::size_t kMaxEventBytes = 1024 * 1024;

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

// Ctrl-C only stops following: installed for the time of follow_deploy, then the previous
// disposition comes back.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_interrupted = 0;
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous_);
  }
  ~InterruptGuard() { sigaction(SIGINT, &previous_, nullptr); }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction previous_ {};
};

// Events cross from the nats.c delivery thread to the main thread here. Bounded: when full, new
// events are dropped and the next poll of the record fills the gap.
class EventQueue {
 public:
  void push(BusMessage message) {
    {
      std::lock_guard lock(mutex_);
      if (items_.size() >= kMaxItems) {
        overflowed_ = true;
        return;
      }
      items_.push_back(std::move(message));
    }
    cv_.notify_one();
  }

  // Waits up to `timeout` for at least one event; returns everything queued.
  std::deque<BusMessage> take(milliseconds timeout, bool& overflowed) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return !items_.empty(); });
    overflowed = std::exchange(overflowed_, false);
    return std::exchange(items_, {});
  }

 private:
  static constexpr std::size_t kMaxItems = 4096;
  std::mutex mutex_;  // guards items_, overflowed_
  std::condition_variable cv_;
  std::deque<BusMessage> items_;
  bool overflowed_ = false;
};

std::size_t terminal_columns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

void write_out(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

class Follower {
 public:
  Follower(Client& client, DeployProgress& progress, const FollowOptions& options)
      : client_(client), progress_(progress), options_(options) {}

  ExitCode run() {
    InterruptGuard guard;
    const std::string& id = progress_.deploy_id();
    std::unique_ptr<NatsConnection::Subscription> subscription;
    try {
      subscription = client_.subscribe("events.deploy." + id + ".>",
                                       [this](BusMessage m) { queue_.push(std::move(m)); });
    } catch (const std::exception& e) {
      std::cerr << "orgctl: cannot follow deploy " << id << ": " << e.what() << "\n";
      return ExitCode::unreachable;
    }
    // Only now can nothing be missed: the record covers what happened before the subscription.
    auto first = poll();
    drain_queue(milliseconds{0});
    if (first) apply_record(*first);
    if (!first && poll_failures_ == 0) {
      std::cerr << "orgctl: " << last_poll_error_ << "\n";
      return poll_error_code_;
    }
    auto next_poll = Clock::now() + kPollInterval;
    auto next_tick = Clock::now();
    while (!progress_.finished()) {
      if (g_interrupted != 0) return interrupted();
      auto now = Clock::now();
      if (options_.live && now >= next_tick) {
        redraw();
        next_tick = now + kTick;
      }
      auto until = options_.live ? std::min(next_poll, next_tick) : next_poll;
      auto wait = std::clamp(std::chrono::duration_cast<milliseconds>(until - now), milliseconds{0},
                             kInterruptCheck);
      if (drain_queue(wait)) next_poll = Clock::now();
      if (progress_.finished()) break;
      if (Clock::now() >= next_poll) {
        if (auto record = poll()) {
          apply_record(*record);
        } else if (poll_failures_ == 0 || poll_failures_ >= kMaxPollFailures) {
          // An error reply (the record is gone) or orgd silent for several polls in a row.
          finish_view();
          std::cerr << "orgctl: stopped following deploy " << id << ": " << last_poll_error_
                    << "\n";
          return poll_error_code_;
        }
        next_poll = Clock::now() + kPollInterval;
      }
    }
    subscription.reset();
    // The final record has every step's outcome and error, even when the events raced ahead.
    if (!final_record_seen_) {
      if (auto record = poll()) apply_record(*record);
    }
    finish_view();
    print_outcome();
    return exit_code_for(progress_.state()).value_or(ExitCode::failed);
  }

 private:
  // Returns true when events were dropped (the caller polls at once).
  bool drain_queue(milliseconds wait) {
    bool overflowed = false;
    auto messages = queue_.take(wait, overflowed);
    for (auto& message : messages) {
      v1::DeployEvent event;
      auto encoding = encoding_from_content_type(message.header(kContentTypeHeader).value_or(""));
      // A malformed event is the daemon's bug; the poll keeps the view right regardless.
      if (!decode(message.data, encoding, event, kMaxEventBytes).ok()) continue;
      progress_.apply(event);
      if (!options_.live && !options_.json) {
        write_out(format_event_line(event, /*local_time=*/true) + "\n");
      }
      if (event.kind() == "finished") finished_event_seen_ = true;
    }
    if (options_.live && !messages.empty()) redraw();
    return overflowed;
  }

  std::optional<v1::DeployRecord> poll() {
    v1::DeployRecord record;
    auto result = get_whole_deploy(client_, progress_.deploy_id(), record);
    if (result.code == ExitCode::ok) {
      poll_failures_ = 0;
      last_poll_error_.clear();
      return record;
    }
    last_poll_error_ = result.error;
    poll_error_code_ = result.code;
    // Silence may pass (orgd restarting, a replica taking over); an error reply will not.
    poll_failures_ = result.code == ExitCode::unreachable ? poll_failures_ + 1 : 0;
    if (options_.live) redraw();
    return std::nullopt;
  }

  void apply_record(const v1::DeployRecord& record) {
    auto moved = progress_.apply(record);
    last_record_ = record;
    if (is_terminal(record.state())) final_record_seen_ = true;
    if (!options_.live && !options_.json) {
      // These changes' events were missed (before the subscription, or lost): say so once.
      for (const auto& repo : moved) {
        for (const auto& row : progress_.rows()) {
          if (row.repo != repo) continue;
          // When the step changed, as far as the record tells; otherwise when we learnt of it.
          const auto& step = row.step;
          auto at = is_set(step.finished_at())  ? from_timestamp(step.finished_at())
                    : is_set(step.started_at()) ? from_timestamp(step.started_at())
                                                : std::chrono::system_clock::now();
          auto when = clock_time(at, /*local_time=*/true);
          std::string error =
              row.step.error().empty() ? "" : ": " + sanitize_line(row.step.error());
          write_out(fmt::format("{} {} {} (attempt {}, from the deploy record){}\n", when, repo,
                                state_name(row.step.state()), row.step.attempts(), error));
        }
      }
    }
    if (options_.live) redraw();
  }

  void redraw() {
    auto lines = progress_.render(std::chrono::system_clock::now(), terminal_columns());
    if (!last_poll_error_.empty()) {
      lines.push_back(truncate_columns("  (" + last_poll_error_ + ")", terminal_columns() - 1));
    }
    write_out(ansi_redraw(lines, drawn_lines_));
    drawn_lines_ = lines.size();
  }

  void finish_view() {
    if (options_.live) redraw();
  }

  void print_outcome() {
    if (options_.json) {
      if (last_record_) std::cout << encode(*last_record_, Encoding::json) << std::endl;
      return;
    }
    const std::string state = state_name(progress_.state());
    if (!options_.live && !finished_event_seen_) {
      write_out(fmt::format("{} finished: {}\n", clock_time(std::chrono::system_clock::now(), true),
                            state));
    }
    if (!progress_.error().empty()) {
      write_out("error: " + sanitize_line(progress_.error()) + "\n");
    }
    for (const auto& row : progress_.rows()) {
      if (row.step.state() == v1::DeployStep::failed && !row.step.error().empty()) {
        write_out(fmt::format("{} failed: {}\n", row.repo, sanitize_line(row.step.error())));
      }
      // A step that stays deployed although the deploy was to be rolled back, and why.
      if (!row.step.rollback_error().empty()) {
        write_out(fmt::format("{} not rolled back: {}\n", row.repo,
                              sanitize_line(row.step.rollback_error())));
      }
    }
    if (options_.live) write_out(fmt::format("deploy {} {}\n", progress_.deploy_id(), state));
  }

  ExitCode interrupted() {
    finish_view();
    const std::string& id = progress_.deploy_id();
    std::cerr << fmt::format(
        "\nstopped following deploy {}; it goes on.\n"
        "  follow again: orgctl deploy get {} --wait\n"
        "  cancel it:    orgctl deploy cancel {}\n",
        id, id, id);
    return ExitCode::interrupted;
  }

  Client& client_;
  DeployProgress& progress_;
  FollowOptions options_;
  EventQueue queue_;
  std::optional<v1::DeployRecord> last_record_;
  bool final_record_seen_ = false;
  bool finished_event_seen_ = false;
  int poll_failures_ = 0;
  ExitCode poll_error_code_ = ExitCode::ok;
  std::string last_poll_error_;
  std::size_t drawn_lines_ = 0;
};

}  // namespace

ExitCode follow_deploy(Client& client, DeployProgress& progress, const FollowOptions& options) {
  return Follower(client, progress, options).run();
}

CallResult get_whole_deploy(Client& client, const std::string& deploy_id,
                            v1::DeployRecord& record) {
  v1::DeployGetRequest request;
  request.set_deploy_id(deploy_id);
  record.Clear();
  // Pages of 500 steps, halved while orgd says a page is over the server's max_payload.
  int page_size = 500;
  request.set_page_size(page_size);
  bool have_summary = false;
  while (true) {
    v1::DeployRecord page;
    auto result = client.call_quietly("deploy.get", request, page);
    if (result.service_code == kTooLarge && page_size > 1) {
      page_size /= 2;
      request.set_page_size(page_size);
      continue;
    }
    if (result.code != ExitCode::ok) return result;
    if (!have_summary) {
      record = page;
      record.clear_steps();
      have_summary = true;
    }
    for (auto& step : *page.mutable_steps()) *record.add_steps() = std::move(step);
    if (page.next_cursor().empty()) break;
    if (page.next_cursor() == request.cursor()) {
      result.code = ExitCode::failed;
      result.error = "deploy.get: orgd returned the same page twice (cursor " +
                     page.next_cursor() + ")";
      return result;
    }
    request.set_cursor(page.next_cursor());
  }
  record.clear_next_cursor();
  record.clear_total_steps();
  return CallResult{};
}

}  // namespace orgd::cli
