#include "tests/support/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {

bool port_bindable(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

RefusingPort::RefusingPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd_);
    throw std::runtime_error("cannot bind a loopback port");
  }
  port_ = ntohs(addr.sin_port);
}

RefusingPort::~RefusingPort() { ::close(fd_); }

std::optional<OrgdPorts> wait_for_ports_file(const std::filesystem::path& file,
                                             std::chrono::milliseconds deadline,
                                             const std::function<bool()>& still_running) {
  std::optional<OrgdPorts> ports;
  wait_until(
      [&] {
        const auto j = nlohmann::json::parse(read_file(file), nullptr, false);
        if (j.is_object() && j.contains("http") && j.contains("nats") &&
            (j["http"].is_null() || j["http"].is_number_unsigned()) && j["nats"].is_string()) {
          ports = OrgdPorts{j["http"].is_null() ? std::uint16_t{0} : j["http"].get<std::uint16_t>(),
                            j["nats"].get<std::string>()};
          return true;
        }
        return !still_running();
      },
      deadline, 20ms);
  return ports;
}

}  // namespace orgd::testing
