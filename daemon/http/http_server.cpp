#include "daemon/http/http_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "daemon/core/ascii.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/metrics.hpp"

namespace orgd {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// Request line plus headers; webhook deliveries carry a dozen short headers.
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
// After an error response the peer may still be sending (say, an oversized body). Reading and
// discarding for a bounded time before closing keeps the kernel from answering with a reset that
// would destroy the response in flight.
constexpr std::size_t kLingerBufferSize = 4096;
// Back-off after an accept failure such as EMFILE, so the accept loop does not spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};
// An evicted connection is closed on its own strand, a moment after the new one is accepted, so
// for a moment there are more connections than the cap; never more than this many times it.
constexpr std::size_t kEvictionOvershoot = 2;

// Why the server closed a connection, for orgd_http_connections_closed_total{reason}.
enum class CloseReason { evicted, refused, header_timeout, read_timeout, write_timeout };
constexpr std::array<const char*, 5> kCloseReasons{"evicted", "refused", "header_timeout",
                                                   "read_timeout", "write_timeout"};

// Steady-clock nanoseconds; the waiting_since values of sessions (0 means "busy").
std::int64_t steady_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string format_endpoint(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string format_endpoint(const tcp::endpoint& ep) {
  return format_endpoint(ep.address().to_string(), ep.port());
}

bool has_line_break(std::string_view s) { return s.find_first_of("\r\n") != s.npos; }

// Statuses whose responses never carry a body (RFC 9110 §6.4.1).
bool bodyless_status(int status) { return status == 204 || status == 304; }

// Header fields the server computes itself; a handler cannot override them.
bool reserved_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
         iequals(name, "connection") || iequals(name, "server");
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category();
}

std::vector<tcp::endpoint> resolve(net::io_context& io, const std::string& host,
                                   std::uint16_t port) {
  std::string name = host;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  // "localhost" may resolve to ::1 first; the daemon means the IPv4 loopback everyone expects.
  if (name == "localhost") return {tcp::endpoint(net::ip::address_v4::loopback(), port)};
  beast::error_code ec;
  const auto address = net::ip::make_address(name, ec);
  if (!ec) return {tcp::endpoint(address, port)};
  tcp::resolver resolver(io);
  const auto results = resolver.resolve(name, std::to_string(port), ec);
  if (ec || results.empty()) {
    throw std::runtime_error("http: cannot resolve " + format_endpoint(host, port) + ": " +
                             (ec ? ec.message() : std::string("no address")));
  }
  std::vector<tcp::endpoint> out;
  for (const auto& entry : results) out.push_back(entry.endpoint());
  return out;
}

class Session;

// The server proper: acceptor, live sessions, handler. HttpServer::Impl, private to HttpServer,
// only derives from it, so that the sessions here can name it.
class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  using Handler = HttpServer::Handler;

  ServerCore(net::io_context& io_context, HttpServerSettings s, Handler h)
      : io(io_context),
        settings(std::move(s)),
        log(logging::get("http")),
        handler_(std::move(h)),
        acceptor_(io_context),
        retry_timer_(io_context) {
    if (settings.metrics == nullptr) return;
    for (std::size_t i = 0; i < kCloseReasons.size(); ++i) {
      closed_[i] = &settings.metrics->counter(
          "orgd_http_connections_closed_total",
          "HTTP connections the server closed before the client did, by reason",
          {{"reason", kCloseReasons[i]}});
    }
    open_ = &settings.metrics->gauge("orgd_http_connections_open", "Open HTTP connections");
  }

  void count(CloseReason reason) {
    std::lock_guard lock(mutex_);
    count_locked(reason);
  }
  void count_locked(CloseReason reason) {
    if (auto* counter = closed_[static_cast<std::size_t>(reason)]) counter->inc();
  }

  // A slot for a body larger than body_limit; false when max_large_bodies are being read.
  bool acquire_large_body() {
    std::size_t taken = large_bodies_.load();
    while (taken < settings.max_large_bodies) {
      if (large_bodies_.compare_exchange_weak(taken, taken + 1)) return true;
    }
    return false;
  }
  void release_large_body() { large_bodies_.fetch_sub(1); }

  void start();
  void stop();
  void stop_and_wait_for_handlers();
  std::optional<HttpServerResponse> invoke(const HttpServerRequest& request);
  // The next piece of a streamed body: true when more follow, false after the last, nullopt
  // when the server is stopping or the stream failed (the connection is then closed).
  std::optional<bool> produce(const HttpServerResponse::BodyStream& stream, std::string& out);
  void forget(Session* session);
  void decline_eviction(Session* session);

  net::io_context& io;
  const HttpServerSettings settings;
  const std::shared_ptr<spdlog::logger> log;
  std::atomic<std::uint16_t> bound_port{0};

 private:
  struct InFlight;
  bool enter();  // false once stopped; otherwise counted in in_flight_ until ~InFlight
  void accept_locked();
  void on_accept(beast::error_code ec, tcp::socket socket);
  std::shared_ptr<Session> choose_eviction_locked();

  // Guards everything below. The acceptor and timer are only touched under it, which is what
  // lets stop() run on any thread while an accept is pending on an io_context thread.
  std::mutex mutex_;
  Handler handler_;  // called without the mutex, but only between ++in_flight_ and --in_flight_
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  std::string address_;
  bool started_ = false;
  bool stopped_ = false;
  bool reported_full_ = false;
  bool reported_evicting_ = false;
  std::map<Session*, std::weak_ptr<Session>> sessions_;
  std::size_t chosen_ = 0;  // sessions chosen for eviction and not yet gone
  // Null once HttpServer is gone: sessions may outlive it (and the registry) briefly.
  std::array<Counter*, kCloseReasons.size()> closed_{};
  Gauge* open_ = nullptr;
  int in_flight_ = 0;
  std::condition_variable handlers_idle_;
  // Large-body slots taken (acquire_large_body); atomic, taken and given back on the sessions'
  // strands without the mutex.
  std::atomic<std::size_t> large_bodies_{0};
};

// The server whose handler the current thread is running, so a handler that destroys its own
// server does not wait for itself.
thread_local const ServerCore* current_server = nullptr;

// One connection. Everything runs on the socket's strand; the only other entry point is close(),
// which stop() posts to that strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<ServerCore> server, tcp::socket socket, std::string remote)
      : server_(std::move(server)), stream_(std::move(socket)), remote_(std::move(remote)) {}

  ~Session() {
    release_large_body();
    server_->forget(this);
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  void close() {
    release_large_body();
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  // When this connection started waiting for its client (steady_now()), 1 when it lingers after
  // an error response, 0 while its request is handled or its response written. Read by the
  // server (under its mutex, from any thread) to choose whom to evict.
  std::int64_t waiting_since() const { return waiting_since_.load(std::memory_order_relaxed); }

  // Chosen for eviction; evict() then runs on the strand. Written under the server's mutex only,
  // which also counts the chosen.
  std::atomic<bool> chosen_for_eviction{false};

  // Closes the connection unless it got busy since it was chosen: a request being handled
  // finishes. Runs on the strand.
  void evict() {
    if (closed_) return;
    if (waiting_since() == 0) return server_->decline_eviction(this);
    server_->count(CloseReason::evicted);
    server_->log->debug("{}: evicted for a new connection (the connection limit is reached)",
                        remote_);
    close();
  }

  net::any_io_executor executor() { return stream_.get_executor(); }

 private:
  const HttpServerSettings& settings() const { return server_->settings; }

  void read_header() {
    if (closed_) return;
    parser_.emplace();
    // The largest any path takes, so the parser does not refuse a large Content-Length before
    // the path is known; on_header() then sets the path's own limit.
    std::size_t widest = settings().body_limit;
    for (const auto& [path, limit] : settings().path_body_limits) widest = std::max(widest, limit);
    parser_->body_limit(widest);
    parser_->header_limit(kHeaderLimit);
    waiting_since_ = steady_now();
    reading_head_ = true;
    stream_.expires_after(settings().header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    reading_head_ = false;
    const auto& req = parser_->get();
    const std::string_view target = req.target();
    const auto path_limit =
        settings().path_body_limits.find(std::string(target.substr(0, target.find('?'))));
    const std::size_t limit = path_limit == settings().path_body_limits.end()
                                  ? settings().body_limit
                                  : path_limit->second;
    const auto length = parser_->content_length();
    if (length && *length > limit) return send_error(413, "payload too large\n");
    if (limit > settings().body_limit && (!length || *length > settings().body_limit)) {
      if (!server_->acquire_large_body()) {
        server_->log->debug("{}: {} large request bodies being read already; refusing", remote_,
                            settings().max_large_bodies);
        return send_error(503, "too many large requests at once; try again\n");
      }
      large_body_ = true;
    }
    // A chunked body is counted against it as it arrives.
    parser_->body_limit(limit);
    // Clients such as curl wait (a second, by default) for "100 Continue" before sending a
    // larger body; the limits were checked with the header, so the body is welcome.
    if (!parser_->is_done() && req.version() >= 11 &&
        iequals(req[http::field::expect], "100-continue")) {
      continue_.emplace(http::status::continue_, 11);
      stream_.expires_after(settings().read_timeout);
      http::async_write(stream_, *continue_,
                        [self = shared_from_this()](beast::error_code ec, std::size_t) {
                          self->continue_.reset();
                          if (ec) return self->on_read_error(ec);
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(settings().read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void release_large_body() {
    if (!large_body_) return;
    large_body_ = false;
    server_->release_large_body();
  }

  void on_read_error(beast::error_code ec) {
    release_large_body();
    if (ec == http::error::end_of_stream) return close();  // the peer is done; so are we
    if (ec == net::error::operation_aborted) return;       // stop() closed us
    if (ec == beast::error::timeout) {
      server_->count(reading_head_ ? CloseReason::header_timeout : CloseReason::read_timeout);
      server_->log->debug("{}: {} timed out, closing", remote_,
                          reading_head_ ? "request head" : "request body");
      return close();
    }
    if (ec == http::error::body_limit) {
      return send_error(413, "payload too large\n");
    }
    if (ec == http::error::header_limit) {
      return send_error(431, "request header fields too large\n");
    }
    if (is_http_error(ec) && ec != http::error::partial_message) {
      server_->log->debug("{}: malformed request: {}", remote_, ec.message());
      return send_error(400, "bad request\n");
    }
    server_->log->debug("{}: read failed: {}", remote_, ec.message());
    close();
  }

  void send_error(int status, std::string body) {
    HttpServerResponse response;
    response.status = status;
    response.body = std::move(body);
    write(std::move(response), 11, /*keep_alive=*/false, /*head=*/false, /*linger=*/true);
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    waiting_since_ = 0;  // busy until the response is written: not to be evicted
    auto& req = parser_->get();

    HttpServerRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    for (const auto& field : req) {
      auto [it, inserted] =
          request.headers.emplace(ascii_lowered(field.name_string()), std::string(field.value()));
      // Repeated fields combine into one comma-separated list (RFC 9110 §5.3).
      if (!inserted) it->second.append(", ").append(field.value());
    }
    request.body = std::move(req.body());
    request.remote = remote_;

    std::optional<HttpServerResponse> response = server_->invoke(request);
    // The body goes with `request` when this returns.
    release_large_body();
    if (!response) return close();  // the server is stopping
    write(std::move(*response), req.version(), req.keep_alive(), req.method() == http::verb::head,
          /*linger=*/false);
  }

  void write(HttpServerResponse out, unsigned version, bool keep_alive, bool head, bool linger) {
    if (out.status < 200 || out.status > 599) {
      server_->log->error("handler returned invalid status {} for a request from {}", out.status,
                          remote_);
      out = HttpServerResponse{500, "text/plain; charset=utf-8", "internal server error\n", {}};
    }
    auto& res = response_.emplace();
    res.version(version);
    res.result(static_cast<unsigned>(out.status));
    res.set(http::field::server, "orgd");
    const bool bodyless = bodyless_status(out.status);
    if (!bodyless) res.set(http::field::content_type, out.content_type);
    for (const auto& [name, value] : out.headers) {
      if (reserved_header(name)) continue;
      if (name.empty() || has_line_break(name) || has_line_break(value)) {
        server_->log->warn("dropping response header '{}' with a line break", ascii_lowered(name));
        continue;
      }
      res.set(name, value);
    }
    res.keep_alive(keep_alive);
    if (out.stream && !bodyless) {
      if (version >= 11) return write_stream(std::move(out.stream), keep_alive, head);
      // HTTP/1.0 has no chunks: the body is made whole.
      out.body.clear();
      while (true) {
        auto more = server_->produce(out.stream, out.body);
        if (!more) return close();
        if (!*more) break;
      }
    }
    if (bodyless) {
      // No body and no Content-Length for these.
    } else if (head) {
      res.content_length(out.body.size());  // what a GET would send, without sending it
    } else {
      res.body() = std::move(out.body);
      res.prepare_payload();
    }

    waiting_since_ = 0;
    stream_.expires_after(settings().write_timeout);
    http::async_write(
        stream_, res,
        [self = shared_from_this(), keep_alive, linger](beast::error_code ec, std::size_t) {
          self->response_.reset();
          if (ec) {
            if (ec == beast::error::timeout) self->server_->count(CloseReason::write_timeout);
            if (ec != net::error::operation_aborted) {
              self->server_->log->debug("{}: write failed: {}", self->remote_, ec.message());
            }
            return self->close();
          }
          if (linger) return self->linger();
          if (!keep_alive) return self->close();
          self->read_header();
        });
  }

  // The head of response_ with chunked encoding, then each piece of the stream as one chunk as
  // soon as the previous one is written: memory holds one piece. The deadline is set once, so
  // the whole response has write_timeout, however many pieces it has.
  void write_stream(HttpServerResponse::BodyStream stream, bool keep_alive, bool head) {
    auto& res = *response_;
    res.chunked(true);
    stream_body_ = std::move(stream);
    stream_head_.emplace(res);
    waiting_since_ = 0;
    stream_.expires_after(settings().write_timeout);
    http::async_write_header(
        stream_, *stream_head_,
        [self = shared_from_this(), keep_alive, head](beast::error_code ec, std::size_t) {
          if (ec) return self->stream_failed(ec);
          if (head) return self->stream_done(keep_alive);
          self->write_piece(keep_alive);
        });
  }

  void write_piece(bool keep_alive) {
    piece_.clear();
    std::optional<bool> more;
    // An empty piece would read as the last chunk: ask again.
    do {
      more = server_->produce(stream_body_, piece_);
    } while (more && *more && piece_.empty());
    if (!more) return stream_failed(net::error::operation_aborted);
    if (piece_.empty()) return write_last_chunk(keep_alive);
    net::async_write(stream_, http::make_chunk(net::buffer(piece_)),
                     [self = shared_from_this(), keep_alive, last = !*more](beast::error_code ec,
                                                                             std::size_t) {
                       if (ec) return self->stream_failed(ec);
                       if (last) return self->write_last_chunk(keep_alive);
                       self->write_piece(keep_alive);
                     });
  }

  void write_last_chunk(bool keep_alive) {
    piece_.clear();
    piece_.shrink_to_fit();
    net::async_write(stream_, http::make_chunk_last(),
                     [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                       if (ec) return self->stream_failed(ec);
                       self->stream_done(keep_alive);
                     });
  }

  void stream_done(bool keep_alive) {
    reset_stream();
    if (!keep_alive) return close();
    read_header();
  }

  void stream_failed(beast::error_code ec) {
    reset_stream();
    if (ec == beast::error::timeout) server_->count(CloseReason::write_timeout);
    if (ec != net::error::operation_aborted) {
      server_->log->debug("{}: write failed: {}", remote_, ec.message());
    }
    close();
  }

  void reset_stream() {
    stream_head_.reset();
    response_.reset();
    stream_body_ = nullptr;
    piece_ = std::string();
  }

  // Half-close, then discard what the peer still sends until it closes or the read timeout
  // (counted once, for the whole drain) runs out.
  void linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    waiting_since_ = 1;  // done with it: the first to go when a slot is needed
    stream_.expires_after(settings().read_timeout);
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(drain_buffer_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }

  const std::shared_ptr<ServerCore> server_;
  beast::tcp_stream stream_;
  const std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<http::string_body>> response_;
  // A streamed body (write_stream): the serializer of response_'s head, the stream, its piece.
  std::optional<http::response_serializer<http::string_body>> stream_head_;
  HttpServerResponse::BodyStream stream_body_;
  std::string piece_;
  std::array<char, kLingerBufferSize> drain_buffer_{};
  bool closed_ = false;
  bool reading_head_ = true;
  bool large_body_ = false;  // holds one of the server's large-body slots
  // Set at construction so a connection accepted but not yet started can be evicted too.
  std::atomic<std::int64_t> waiting_since_{steady_now()};
};

void ServerCore::start() {
  std::lock_guard lock(mutex_);
  if (started_ || stopped_) {
    throw std::logic_error("HttpServer::start called on a started or stopped server");
  }
  address_ = format_endpoint(settings.host, settings.port);
  std::string failure = "no address";
  for (const auto& endpoint : resolve(io, settings.host, settings.port)) {
    beast::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (!ec) {
      failure.clear();
      break;
    }
    failure = ec.message();
    beast::error_code ignored;
    acceptor_.close(ignored);
  }
  if (!failure.empty()) {
    throw std::runtime_error("http: cannot listen on " + address_ + ": " + failure);
  }
  beast::error_code ec;
  const tcp::endpoint local = acceptor_.local_endpoint(ec);
  bound_port = local.port();
  address_ = format_endpoint(local);
  started_ = true;
  log->info("listening on {}", address_);
  accept_locked();
}

void ServerCore::accept_locked() {
  if (stopped_) return;
  // Each connection gets its own strand, so its handlers never run concurrently even though
  // the io_context is run by several threads.
  acceptor_.async_accept(net::make_strand(io),
                         beast::bind_front_handler(&ServerCore::on_accept, shared_from_this()));
}

void ServerCore::on_accept(beast::error_code ec, tcp::socket socket) {
  std::shared_ptr<Session> session;
  std::shared_ptr<Session> evicted;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    if (ec) {
      if (ec == net::error::operation_aborted) return;
      log->warn("accept on {} failed: {}; retrying", address_, ec.message());
      retry_timer_.expires_after(kAcceptRetryDelay);
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec) return;
        std::lock_guard lock(self->mutex_);
        self->accept_locked();
      });
      return;
    }
    beast::error_code ignored;
    const tcp::endpoint remote = socket.remote_endpoint(ignored);
    // Those chosen for eviction are as good as gone.
    bool room = sessions_.size() - chosen_ < settings.max_connections;
    if (!room && sessions_.size() < settings.max_connections * kEvictionOvershoot) {
      evicted = choose_eviction_locked();
      room = evicted != nullptr;
      // Log the first eviction of a burst only: a flood must not become a flood of log lines.
      if (room && !reported_evicting_) {
        log->warn(
            "{} connections open (the limit); closing those waiting longest for their "
            "clients to make room for new ones",
            settings.max_connections);
        reported_evicting_ = true;
      }
    } else if (room) {
      reported_full_ = false;
      reported_evicting_ = false;
    }
    if (!room) {
      if (!reported_full_) {
        log->warn("{} connections open (the limit), all busy; refusing new ones", sessions_.size());
        reported_full_ = true;
      }
      count_locked(CloseReason::refused);
      socket.close(ignored);
    } else {
      session =
          std::make_shared<Session>(shared_from_this(), std::move(socket), format_endpoint(remote));
      sessions_.emplace(session.get(), session);
      if (open_) open_->set(static_cast<double>(sessions_.size()));
    }
    accept_locked();
  }
  if (evicted) net::post(evicted->executor(), [evicted] { evicted->evict(); });
  if (session) session->start();
}

// While a handler or a body stream runs: counted in in_flight_, so stop() waits for it.
struct ServerCore::InFlight {
  ServerCore& server;
  const ServerCore* previous = current_server;
  explicit InFlight(ServerCore& s) : server(s) { current_server = &s; }
  ~InFlight() {
    current_server = previous;
    std::lock_guard lock(server.mutex_);
    if (--server.in_flight_ == 0) server.handlers_idle_.notify_all();
  }
};

bool ServerCore::enter() {
  std::lock_guard lock(mutex_);
  if (stopped_) return false;
  ++in_flight_;
  return true;
}

std::optional<bool> ServerCore::produce(const HttpServerResponse::BodyStream& stream,
                                        std::string& out) {
  if (!enter()) return std::nullopt;
  InFlight done(*this);
  try {
    return stream(out);
  } catch (const std::exception& e) {
    log->error("a streamed response body failed: {}", e.what());
  } catch (...) {
    log->error("a streamed response body failed: unknown exception");
  }
  return std::nullopt;
}

std::optional<HttpServerResponse> ServerCore::invoke(const HttpServerRequest& request) {
  if (!enter()) return std::nullopt;
  InFlight done(*this);

  // The path without the query: a query string may carry tokens, and logs must not.
  const std::string_view path =
      std::string_view(request.target)
          .substr(0, std::min(request.target.find('?'), request.target.size()));
  try {
    return handler_(request);
  } catch (const std::exception& e) {
    log->error("handler failed for {} {}: {}", request.method, path, e.what());
  } catch (...) {
    log->error("handler failed for {} {}: unknown exception", request.method, path);
  }
  // Never the exception text: it is for the operator's log, not for whoever sent the request.
  return HttpServerResponse{500, "text/plain; charset=utf-8", "internal server error\n", {}};
}

// The connection that has waited longest for its client, marked as chosen; null when every
// connection is busy (its request handled, its response written) or already chosen. The caller
// releases it outside the mutex: it may be the last reference, and ~Session takes the mutex.
std::shared_ptr<Session> ServerCore::choose_eviction_locked() {
  Session* oldest = nullptr;
  std::int64_t oldest_since = 0;
  for (const auto& [raw, weak] : sessions_) {
    const std::int64_t since = raw->waiting_since();
    if (since == 0 || raw->chosen_for_eviction) continue;
    if (oldest == nullptr || since < oldest_since) {
      oldest = raw;
      oldest_since = since;
    }
  }
  if (oldest == nullptr) return nullptr;
  auto session = sessions_.at(oldest).lock();  // null when it is being destroyed right now
  if (session) {
    session->chosen_for_eviction = true;
    ++chosen_;
  }
  return session;
}

void ServerCore::decline_eviction(Session* session) {
  std::lock_guard lock(mutex_);
  if (session->chosen_for_eviction.exchange(false)) --chosen_;
}

void ServerCore::forget(Session* session) {
  std::lock_guard lock(mutex_);
  if (session->chosen_for_eviction) --chosen_;
  sessions_.erase(session);
  if (open_) open_->set(static_cast<double>(sessions_.size()));
}

void ServerCore::stop() {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    beast::error_code ignored;
    acceptor_.close(ignored);
    retry_timer_.cancel();
    for (const auto& [raw, weak] : sessions_) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
    if (started_) log->info("stopped listening on {}", address_);
  }
  // Sockets are closed on their own strands; a session's last reference may be dropped here,
  // and its destructor takes the mutex, hence outside the lock.
  for (auto& session : live) {
    net::post(session->executor(), [session] { session->close(); });
  }
}

void ServerCore::stop_and_wait_for_handlers() {
  stop();
  Handler released;
  {
    std::unique_lock lock(mutex_);
    // The handler's captures may die with the server's owner: wait for handlers still running.
    if (current_server != this) handlers_idle_.wait(lock, [&] { return in_flight_ == 0; });
    if (in_flight_ == 0) released.swap(handler_);
    closed_ = {};
    open_ = nullptr;
  }
}

}  // namespace

struct HttpServer::Impl : ServerCore {
  using ServerCore::ServerCore;
};

HttpServer::HttpServer(boost::asio::io_context& io, HttpServerSettings settings, Handler handler)
    : impl_(std::make_shared<Impl>(io, std::move(settings), std::move(handler))) {}

HttpServer::~HttpServer() { impl_->stop_and_wait_for_handlers(); }

void HttpServer::start() { impl_->start(); }

void HttpServer::stop() { impl_->stop(); }

std::uint16_t HttpServer::port() const { return impl_->bound_port.load(); }

}  // namespace orgd
