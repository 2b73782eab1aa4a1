#pragma once
// What both benchmarks share: flags, a private nats-server on a free port with a throw-away
// store, plain nats.c connections, and number formatting. Header-only: every bench/*.cpp is
// its own executable.

#include <fmt/format.h>
#include <nats/nats.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daemon/bus/embedded_server.hpp"

namespace orgd::bench {

using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// `--name value` / `--name=value` flags with an environment fallback (ORGD_BENCH_<NAME>, upper
// case, '-' as '_'), so `make bench` can be tuned without editing the script.
class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        help_ = true;
        continue;
      }
      if (arg.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument: " + arg);
      arg = arg.substr(2);
      if (auto eq = arg.find('='); eq != std::string::npos) {
        values_[arg.substr(0, eq)] = arg.substr(eq + 1);
      } else if (i + 1 < argc) {
        values_[arg] = argv[++i];
      } else {
        throw std::invalid_argument("--" + arg + " needs a value");
      }
    }
  }

  bool help() const { return help_; }

  std::int64_t integer(const std::string& name, std::int64_t fallback, std::int64_t min,
                       std::int64_t max) const {
    const auto text = raw(name);
    if (!text) return fallback;
    std::size_t used = 0;
    std::int64_t v = 0;
    try {
      v = std::stoll(*text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text->size() || v < min || v > max) {
      throw std::invalid_argument(
          fmt::format("--{}: expected an integer in [{}, {}], got '{}'", name, min, max, *text));
    }
    return v;
  }

  // A comma-separated list of integers ("1000,10000"), each in [min, max]; `fallback` when the
  // flag is absent.
  std::vector<std::int64_t> integers(const std::string& name, std::vector<std::int64_t> fallback,
                                     std::int64_t min, std::int64_t max) const {
    const auto text = raw(name);
    if (!text) return fallback;
    std::vector<std::int64_t> out;
    std::size_t from = 0;
    for (;;) {
      const std::size_t comma = text->find(',', from);
      const std::string item =
          text->substr(from, comma == std::string::npos ? std::string::npos : comma - from);
      std::size_t used = 0;
      std::int64_t v = 0;
      try {
        v = std::stoll(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (item.empty() || used != item.size() || v < min || v > max) {
        throw std::invalid_argument(
            fmt::format("--{}: expected integers in [{}, {}], separated by commas, got '{}'", name,
                        min, max, *text));
      }
      out.push_back(v);
      if (comma == std::string::npos) break;
      from = comma + 1;
    }
    return out;
  }

  // A flag's text as given, if it was.
  std::optional<std::string> text(const std::string& name) const { return raw(name); }

 private:
  std::optional<std::string> raw(const std::string& name) const {
    if (auto it = values_.find(name); it != values_.end()) return it->second;
    std::string env = "ORGD_BENCH_";
    for (char c : name) env.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
    if (const char* v = std::getenv(env.c_str()); v != nullptr && *v != '\0') return v;
    return std::nullopt;
  }

  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// A fresh directory under $TMPDIR (or /tmp), removed with the object.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The benchmark's own nats-server (JetStream, loopback, a free port picked by the server), shaped
// like orgd's embedded one. Slow-consumer limits are raised so a burst is measured, not cut off.
class BenchServer {
 public:
  BenchServer() : dir_("orgd-bench-nats") {
    EmbeddedServerSettings s;
    s.host = "127.0.0.1";
    s.port = 0;
    s.store_dir = (dir_.path() / "store").string();
    s.server_name = "orgd-bench";
    s.extra_config = "max_pending: 268435456\nwrite_deadline: \"10s\"\n";
    if (const char* bin = std::getenv("ORGD_TEST_NATS_SERVER"); bin != nullptr && *bin != '\0') {
      s.binary = bin;
    }
    server_ = std::make_unique<EmbeddedNatsServer>(std::move(s));
    server_->start();  // from main(): PR_SET_PDEATHSIG follows the forking thread
  }
  std::string url() const { return server_->url(); }

 private:
  ScratchDir dir_;
  std::unique_ptr<EmbeddedNatsServer> server_;
};

inline void check(natsStatus s, const char* what) {
  if (s != NATS_OK) {
    throw std::runtime_error(
        fmt::format("{}: {} ({})", what, natsStatus_GetText(s),
                    nats_GetLastError(nullptr) ? nats_GetLastError(nullptr) : ""));
  }
}

struct ConnectionDeleter {
  void operator()(natsConnection* c) const {
    if (c != nullptr) {
      natsConnection_Close(c);
      natsConnection_Destroy(c);
    }
  }
};
using Connection = std::unique_ptr<natsConnection, ConnectionDeleter>;

struct SubscriptionDeleter {
  void operator()(natsSubscription* s) const {
    if (s != nullptr) {
      natsSubscription_Unsubscribe(s);
      natsSubscription_Destroy(s);
    }
  }
};
using Subscription = std::unique_ptr<natsSubscription, SubscriptionDeleter>;

// A plain nats.c client. send_asap: publish at once instead of through the flusher thread (what
// orgd does, and what a latency-sensitive client does); off for bulk publishing.
inline Connection connect(const std::string& url, const char* name, bool send_asap) {
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "natsOptions_Create");
  std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> guard(opts, natsOptions_Destroy);
  check(natsOptions_SetURL(opts, url.c_str()), "url");
  check(natsOptions_SetName(opts, name), "name");
  check(natsOptions_SetSendAsap(opts, send_asap), "send asap");
  check(natsOptions_SetAllowReconnect(opts, false), "reconnect");
  natsConnection* conn = nullptr;
  check(natsConnection_Connect(&conn, opts), "connect");
  return Connection(conn);
}

// Polls until `done` or `deadline`; false on timeout. The benchmarks wait on counters the
// subscribers advance, with a short yield rather than a sleep, so the end is seen promptly.
inline bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds deadline) {
  const auto until = SteadyClock::now() + deadline;
  while (!done()) {
    if (SteadyClock::now() >= until) return false;
    std::this_thread::sleep_for(50us);
  }
  return true;
}

inline double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The value at or below which `q` (0..1) of the samples fall (nearest rank).
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(q * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// 1234567 -> "1,234,567".
inline std::string grouped(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// VmRSS of a process (kB in /proc/<pid>/status), in bytes; 0 if it cannot be read.
inline std::uint64_t rss_bytes(pid_t pid) {
  FILE* f = std::fopen(fmt::format("/proc/{}/status", pid).c_str(), "r");
  if (f == nullptr) return 0;
  char line[256];
  std::uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %lu kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb * 1024;
}

inline std::string machine_summary() {
  return fmt::format("{} online CPUs, nats.c {}", std::thread::hardware_concurrency(),
                     nats_GetVersion());
}

}  // namespace orgd::bench
