#pragma once

// Idle keep-alive connections per origin (scheme, host, port), a bounded number each. A
// connection is taken out for one request and given back when its response left it reusable;
// one that has sat idle too long, or that the server has closed, is dropped on the way out.

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/net/connection.hpp"

namespace orgd::net {

class ConnectionPool {
 public:
  ConnectionPool(std::size_t max_idle_per_origin, std::chrono::milliseconds idle_timeout)
      : max_idle_(max_idle_per_origin), idle_timeout_(idle_timeout) {}

  // The most recently used live connection to `origin`, or null.
  std::unique_ptr<Connection> take(const std::string& origin);
  void give_back(const std::string& origin, std::unique_ptr<Connection> connection);
  std::size_t idle() const;

 private:
  const std::size_t max_idle_;
  const std::chrono::milliseconds idle_timeout_;
  mutable std::mutex mutex_;  // guards idle_
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle_;
};

}  // namespace orgd::net
