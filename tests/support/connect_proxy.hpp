#pragma once

// A small HTTP CONNECT proxy on loopback for the HTTPS client's proxy tests: it answers
// CONNECT host:port by dialling 127.0.0.1:port (whatever the host: the origin is a loopback
// fake served under a name) and relaying bytes both ways. It records every CONNECT target and
// Proxy-Authorization it saw, and refuses with 407 when it expects credentials it was not given.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace orgd::testing {

class ConnectProxy {
 public:
  // `expected_authorization`: the Proxy-Authorization value required ("Basic …"); none when
  // unset. Throws when it cannot listen.
  explicit ConnectProxy(std::optional<std::string> expected_authorization = std::nullopt);
  ~ConnectProxy();
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  struct Tunnel {
    std::string target;         // the CONNECT request's host:port
    std::string authorization;  // its Proxy-Authorization, "" when absent
    bool accepted = false;
  };
  std::vector<Tunnel> tunnels() const;

 private:
  void accept_loop();
  void serve(int client);

  std::optional<std::string> expected_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // a pipe: written to stop every loop
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mutex_;  // guards tunnels_, workers_
  std::vector<Tunnel> tunnels_;
  std::vector<std::thread> workers_;
};

}  // namespace orgd::testing
