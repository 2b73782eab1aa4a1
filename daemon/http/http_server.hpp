#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace orgd {

struct HttpServerRequest {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path and query, as sent
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string remote;  // "ip:port"
};

struct HttpServerResponse {
  // A body made piece by piece, for one too large to build at once: called on the connection's
  // strand for the first piece and again each time the previous piece is written, it appends the
  // next piece to `out` and returns false with the last. Sent with chunked transfer encoding
  // (made whole first for an HTTP/1.0 client, not called for HEAD), under the same write_timeout
  // as any response: a client that stops reading holds its own connection only, never an io
  // thread. Called like the handler (not after stop()); one that throws ends the connection with
  // the body incomplete.
  using BodyStream = std::function<bool(std::string& out)>;

  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;
  BodyStream stream = nullptr;  // when set, the body; `body` is then ignored
};

class MetricsRegistry;

struct HttpServerSettings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port (see HttpServer::port())
  std::size_t body_limit = 1024 * 1024;
  // Paths (exact, without the query) whose bodies may be larger, or must be smaller, than
  // body_limit: POST /webhooks/github takes GitHub's 25 MB, every other path keeps body_limit.
  // A body over its path's limit is refused with 413, from its Content-Length before it is read.
  std::map<std::string, std::size_t> path_body_limits;
  // Requests read at once whose body may be larger than body_limit (a larger path limit, with
  // a Content-Length over body_limit or a chunked body); more get 503 until one is done, so
  // large bodies cannot pile up in memory one per connection.
  std::size_t max_large_bodies = 4;
  // The whole request head (request line and headers), counted from when the server starts
  // waiting for it: also how long an idle keep-alive connection is kept.
  std::chrono::milliseconds header_timeout{5'000};
  // The whole body, once the head is in.
  std::chrono::milliseconds read_timeout{10'000};
  // The whole response, for clients that do not read it.
  std::chrono::milliseconds write_timeout{10'000};
  std::size_t max_connections = 256;
  // Where the server counts what it closes (evicted, refused, timed out); none when null.
  MetricsRegistry* metrics = nullptr;
};

// A small HTTP/1.1 server (Boost.Beast) on the daemon's io_context. Every read has a size limit
// and a timeout, and so does every write.
//
// Connections are capped at max_connections. At the cap, a new connection evicts the one that
// has waited longest for its client (lingering after an error response first, then the oldest
// wait for a request head or body), so clients that connect and send nothing, or trickle, cannot
// lock out a probe: the probe is the newest and sends its request at once. Connections whose
// request is being handled or whose response is being written are never evicted; when every
// connection is in that state the new one is closed at once.
//
// The handler runs on an io_context thread and must not block.
class HttpServer {
 public:
  using Handler = std::function<HttpServerResponse(const HttpServerRequest&)>;

  HttpServer(boost::asio::io_context& io, HttpServerSettings settings, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. Throws std::runtime_error naming the address on failure.
  void start();
  // Stops accepting and closes open connections.
  void stop();
  std::uint16_t port() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace orgd
