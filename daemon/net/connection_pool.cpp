#include "daemon/net/connection_pool.hpp"

namespace orgd::net {

std::unique_ptr<Connection> ConnectionPool::take(const std::string& origin) {
  std::deque<std::unique_ptr<Connection>> dropped;  // closed outside the lock
  std::unique_ptr<Connection> found;
  {
    std::lock_guard lock(mutex_);
    const auto it = idle_.find(origin);
    if (it == idle_.end()) return nullptr;
    const auto now = std::chrono::steady_clock::now();
    auto& list = it->second;
    while (!list.empty()) {
      auto c = std::move(list.back());
      list.pop_back();
      if (now - c->idle_since < idle_timeout_ && c->looks_alive()) {
        found = std::move(c);
        break;
      }
      dropped.push_back(std::move(c));
    }
    if (list.empty()) idle_.erase(it);
  }
  return found;
}

void ConnectionPool::give_back(const std::string& origin, std::unique_ptr<Connection> connection) {
  if (max_idle_ == 0) return;
  connection->idle_since = std::chrono::steady_clock::now();
  std::unique_ptr<Connection> dropped;
  std::lock_guard lock(mutex_);
  auto& list = idle_[origin];
  list.push_back(std::move(connection));
  if (list.size() > max_idle_) {
    dropped = std::move(list.front());  // the oldest goes
    list.pop_front();
  }
}

std::size_t ConnectionPool::idle() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [origin, list] : idle_) n += list.size();
  return n;
}

}  // namespace orgd::net
