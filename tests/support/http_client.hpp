#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace orgd::testing {

struct HttpResult {
  int status = 0;
  std::string body;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  // The first value of a header, its name compared case-insensitively; "" when absent.
  std::string header(std::string_view name) const;
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

// One kept-alive HTTP/1.1 connection to a loopback port, for tests that check connection reuse:
// every request() goes over the same socket until the server closes it (then request() returns
// nullopt and open() turns false).
class HttpConnection {
 public:
  explicit HttpConnection(std::uint16_t port,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds{10000});
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  bool open() const;
  std::optional<HttpResult> request(
      const std::string& method, const std::string& target, const std::string& body = "",
      const std::vector<std::pair<std::string, std::string>>& headers = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace orgd::testing
