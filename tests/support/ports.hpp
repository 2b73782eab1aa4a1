#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace orgd::testing {

// True when a listener could bind 127.0.0.1:port now (nobody holds it).
bool port_bindable(std::uint16_t port);

// A loopback port that refuses connections for as long as this object lives: a socket bound to
// it (without SO_REUSEADDR) and never listening, so no other process can take the port and a
// connect gets "connection refused". For tests of "nothing answers there".
class RefusingPort {
 public:
  RefusingPort();
  ~RefusingPort();
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// What an orgd started with `--ports-file FILE` (and port 0 in its config) bound, read from
// that file: {"http":PORT,"nats":"URL"}. The race-free way to learn orgd's ports: guessing a free
// port (bind, read, close) lets another process take it before orgd binds it.
struct OrgdPorts {
  std::uint16_t http = 0;  // 0: HTTP is off
  std::string nats;
};

// Polls for the ports file (orgd writes it atomically, so it is whole once it exists) until it
// parses, `still_running` returns false, or `deadline` passes; nullopt then.
std::optional<OrgdPorts> wait_for_ports_file(const std::filesystem::path& file,
                                             std::chrono::milliseconds deadline,
                                             const std::function<bool()>& still_running);

}  // namespace orgd::testing
