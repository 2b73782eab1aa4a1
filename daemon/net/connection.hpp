#pragma once

// One HTTP/1.1 connection of the HTTPS client: plain TCP (loopback only) or TLS, direct or
// through a CONNECT tunnel. Each connection has its own io_context, run by the one thread
// using it at a time (a connection is checked out of the pool for a request), so send() is
// synchronous without a shared I/O thread, and every operation has a timeout.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"
#include "daemon/net/http_transport.hpp"
#include "daemon/net/proxy.hpp"
#include "daemon/net/url.hpp"

namespace orgd::net {

// Why a try failed, for the error metric's `kind` label and the retry decision.
enum class FailureKind { dns, connect, proxy, tls, timeout, closed, protocol, body_limit };

std::string_view failure_kind_name(FailureKind kind);

struct Failure {
  FailureKind kind = FailureKind::protocol;
  std::string message;  // names the peer and the cause; never a credential
  // No byte of an answer was read (a pooled connection the server had closed shows so).
  bool nothing_received = true;
  // The request never left (resolving, connecting, the tunnel or the handshake failed): sending
  // it again is harmless whatever the method.
  bool nothing_sent = false;
  // Trying again will not help (a certificate that does not verify, a proxy refusing the
  // credentials).
  bool permanent = false;
};

template <class T>
struct Outcome {
  std::optional<T> value;
  Failure failure;
  bool ok() const { return value.has_value(); }
};

// Where a connection goes.
struct Route {
  Url url;                      // scheme, host, port of the origin
  std::string connect_address;  // the address to dial instead of resolving url.host ("" none)
  const ProxySettings* proxy = nullptr;  // tunnel through this proxy, or direct
};

class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Resolves, connects (through the proxy when the route has one), and for https:// makes
  // the TLS handshake with SNI and certificate + host name checks against `tls`.
  static Outcome<std::unique_ptr<Connection>> open(const Route& route,
                                                   boost::asio::ssl::context* tls,
                                                   std::chrono::milliseconds connect_timeout);

  // Writes the request (a list of buffers: the Authorization value is written from its
  // Secret's memory) within `timeout`.
  Outcome<bool> write(const std::vector<boost::asio::const_buffer>& buffers,
                      std::chrono::milliseconds timeout);

  struct Answer {
    HttpResponse response;
    bool keep_alive = false;
  };
  // Reads one response within `timeout`, its body at most `max_body` bytes. `head`: the
  // answer to a HEAD request (no body follows).
  Outcome<Answer> read(bool head, std::size_t max_body, std::chrono::milliseconds timeout);

  // False when the server has closed the connection or sent something unasked (a pooled
  // connection in that state cannot carry a request).
  bool looks_alive() const;

  std::chrono::steady_clock::time_point idle_since{};

 private:
  explicit Connection(std::string peer);
  template <class Start>
  boost::system::error_code run(Start&& start);
  boost::beast::tcp_stream& lowest();
  void close();

  const std::string peer_;  // host:port of the origin, for messages
  boost::asio::io_context ioc_;
  std::unique_ptr<boost::beast::tcp_stream> plain_;
  std::unique_ptr<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_;
  boost::beast::flat_buffer buffer_;
};

}  // namespace orgd::net
