#include "tests/support/connect_proxy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string_view>

namespace orgd::testing {
namespace {

bool send_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool send_text(int fd, std::string_view text) { return send_all(fd, text.data(), text.size()); }

std::string header_value(const std::string& head, const std::string& name) {
  std::string lower_head = head;
  std::transform(lower_head.begin(), lower_head.end(), lower_head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto at = lower_head.find("\r\n" + name + ":");
  if (at == std::string::npos) return "";
  auto start = at + 2 + name.size() + 1;
  while (start < head.size() && head[start] == ' ') ++start;
  const auto end = head.find("\r\n", start);
  return head.substr(start, end - start);
}

}  // namespace

ConnectProxy::ConnectProxy(std::optional<std::string> expected_authorization)
    : expected_(std::move(expected_authorization)) {
  if (::pipe(wake_) != 0) throw std::runtime_error("pipe failed");
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("the CONNECT proxy cannot listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

ConnectProxy::~ConnectProxy() {
  const char stop = 'x';
  (void)!::write(wake_[1], &stop, 1);
  acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mutex_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

std::vector<ConnectProxy::Tunnel> ConnectProxy::tunnels() const {
  std::lock_guard lock(mutex_);
  return tunnels_;
}

void ConnectProxy::accept_loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents != 0) return;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    workers_.emplace_back([this, client] { serve(client); });
  }
}

void ConnectProxy::serve(int client) {
  // The request head, up to the blank line (a client sends nothing more before our answer).
  std::string head;
  char buf[16384];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
    pollfd fds[2] = {{client, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, 10'000) <= 0 || fds[1].revents != 0) {
      ::close(client);
      return;
    }
    const ssize_t n = ::recv(client, buf, 1, 0);  // byte by byte: nothing past the head is eaten
    if (n <= 0) {
      ::close(client);
      return;
    }
    head.append(buf, static_cast<std::size_t>(n));
  }
  Tunnel tunnel;
  const auto line_end = head.find("\r\n");
  const std::string line = head.substr(0, line_end);
  if (line.rfind("CONNECT ", 0) == 0) {
    tunnel.target = line.substr(8, line.find(' ', 8) - 8);
  }
  tunnel.authorization = header_value(head, "proxy-authorization");
  const auto colon = tunnel.target.rfind(':');
  int upstream = -1;
  std::string answer;
  if (tunnel.target.empty() || colon == std::string::npos) {
    answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  } else if (expected_ && tunnel.authorization != *expected_) {
    answer =
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic "
        "realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(tunnel.target.substr(colon + 1))));
    upstream = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(upstream);
      upstream = -1;
      answer = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    } else {
      answer = "HTTP/1.1 200 Connection established\r\n\r\n";
      tunnel.accepted = true;
    }
  }
  // Recorded before answering: a client that has its answer finds the tunnel listed.
  {
    std::lock_guard lock(mutex_);
    tunnels_.push_back(tunnel);
  }
  if (!send_text(client, answer) && upstream >= 0) {
    ::close(upstream);
    upstream = -1;
  }
  while (upstream >= 0) {
    pollfd fds[3] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) continue;
    if (fds[2].revents != 0) break;
    bool open = true;
    for (int i = 0; i < 2 && open; ++i) {
      if (fds[i].revents == 0) continue;
      const int from = i == 0 ? client : upstream;
      const int to = i == 0 ? upstream : client;
      const ssize_t n = ::recv(from, buf, sizeof buf, 0);
      open = n > 0 && send_all(to, buf, static_cast<std::size_t>(n));
    }
    if (!open) break;
  }
  if (upstream >= 0) ::close(upstream);
  ::close(client);
}

}  // namespace orgd::testing
