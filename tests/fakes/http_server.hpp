#pragma once

// A loopback HTTP/1.1 server for tests that stand in for a cloud API: every request is answered
// by a handler the test gives, and recorded so the test can check what was sent. Keep-alive,
// plain or TLS, and answers that come late or never, which is what a client's retries, timeouts
// and connection reuse have to be proved against.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/net/http_transport.hpp"

namespace orgd::testing {

struct FakeRequest {
  std::string method, target, path, query;  // target = path?query
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  std::string header(std::string_view name) const;  // case-insensitive, "" when absent
};

struct FakeResponse {
  int status = 200;
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  std::chrono::milliseconds delay{0};  // wait this long before answering
  bool drop = false;                   // close the connection without answering
};

// FakeHttpServer::Options. Declared outside the class: a nested struct with member initializers
// cannot be the default argument of the enclosing class's constructor (GCC rejects it).
struct FakeHttpServerOptions {
  bool tls = false;
  std::string cert_file, key_file;  // PEM files
};

class FakeHttpServer {
 public:
  // Called on one of the server's threads, possibly for several connections at once: a handler
  // that keeps state guards it. An exception it throws becomes a 500 answer.
  using Handler = std::function<FakeResponse(const FakeRequest&)>;
  using Options = FakeHttpServerOptions;

  // Listens on 127.0.0.1:0; throws when it cannot listen or load the certificate.
  explicit FakeHttpServer(Handler handler, Options options = {});
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  int port() const;
  std::string base_url() const;               // "http://127.0.0.1:<port>" or https://
  std::vector<FakeRequest> requests() const;  // every request received, in order
  std::size_t request_count() const;
  std::size_t connections_accepted() const;  // keep-alive checks
  void set_handler(Handler handler);
  void clear_requests();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace orgd::testing
