#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace orgd::testing {

struct HttpResult {
  int status = 0;
  std::string body;
  std::string content_type;
};

// One HTTP/1.1 request over loopback; nullopt when the connection fails or times out.
std::optional<HttpResult> http_request(const std::string& host, std::uint16_t port,
                                       const std::string& method, const std::string& target,
                                       const std::string& body = "",
                                       std::chrono::milliseconds timeout =
                                           std::chrono::milliseconds{10000});

// The timeout leaves room for a loaded machine: pass a shorter one where speed is the point.
inline std::optional<HttpResult> http_get(std::uint16_t port, const std::string& target) {
  return http_request("127.0.0.1", port, "GET", target);
}

}  // namespace orgd::testing
