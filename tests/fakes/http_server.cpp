#include "tests/fakes/http_server.hpp"

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>

namespace orgd::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Bounds that keep a misbehaving client from holding the server: tests send small bodies, and an
// idle keep-alive connection is closed long after any test would have used it again.
constexpr std::size_t kBodyLimit = 16u << 20;
constexpr std::chrono::seconds kIdleTimeout{60};
constexpr int kThreads = 2;

// What the sessions share with the server object. Held by shared pointer because a session's
// last handler may be destroyed with the io_context, after the server object's other members.
struct State {
  mutable std::mutex mutex;  // guards handler and requests
  std::shared_ptr<const FakeHttpServer::Handler> handler;
  std::vector<FakeRequest> requests;
  std::atomic<std::size_t> connections{0};

  std::shared_ptr<const FakeHttpServer::Handler> current_handler() const {
    std::lock_guard lock(mutex);
    return handler;
  }
  void record(const FakeRequest& request) {
    std::lock_guard lock(mutex);
    requests.push_back(request);
  }
};

FakeRequest to_fake(const http::request<http::string_body>& req) {
  FakeRequest out;
  out.method = std::string(req.method_string());
  out.target = std::string(req.target());
  auto q = out.target.find('?');
  out.path = out.target.substr(0, q);
  out.query = q == std::string::npos ? "" : out.target.substr(q + 1);
  for (const auto& field : req) {
    out.headers.push_back({std::string(field.name_string()), std::string(field.value())});
  }
  out.body = req.body();
  return out;
}

// One connection: read a request, let the handler answer, wait if asked, write, and read the
// next one while the client keeps the connection alive. Every step runs on the connection's
// strand, so a connection's requests are answered in order while others proceed in parallel.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <class... Args>
  Session(std::shared_ptr<State> state, tcp::socket socket, Args&... tls_context)
      : state_(std::move(state)),
        stream_(std::move(socket), tls_context...),
        timer_(stream_.get_executor()) {}

  void run() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Session::start, this->shared_from_this()));
  }

 private:
  void start() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
      stream_.async_handshake(ssl::stream_base::server,
                              beast::bind_front_handler(&Session::on_handshake,
                                                        this->shared_from_this()));
    } else {
      read();
    }
  }

  void on_handshake(beast::error_code ec) {
    if (!ec) read();
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(kBodyLimit);
    beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream) return close();
    if (ec) return;  // reset, timed out or malformed: the connection goes with the session
    request_ = parser_->release();
    FakeRequest fake = to_fake(request_);
    state_->record(fake);
    auto handler = state_->current_handler();
    try {
      answer_ = handler && *handler ? (*handler)(fake) : FakeResponse{404, {}, "no handler"};
    } catch (const std::exception& e) {
      answer_ = FakeResponse{500, {}, std::string("handler threw: ") + e.what()};
    } catch (...) {
      answer_ = FakeResponse{500, {}, "handler threw"};
    }
    if (answer_.delay.count() > 0) {
      timer_.expires_after(answer_.delay);
      timer_.async_wait(beast::bind_front_handler(&Session::on_delay, this->shared_from_this()));
    } else {
      respond();
    }
  }

  void on_delay(beast::error_code ec) {
    if (!ec) respond();
  }

  void respond() {
    if (answer_.drop) {
      // No TLS close_notify either: the client sees the connection end mid-exchange.
      beast::error_code ignored;
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(stream_).close();
      return;
    }
    response_ = {};
    response_.version(11);
    response_.result(static_cast<unsigned>(answer_.status));
    bool connection_set = false;
    for (const auto& h : answer_.headers) {
      response_.insert(h.name, h.value);
      if (iequals(h.name, "connection")) connection_set = true;
    }
    if (!connection_set) response_.keep_alive(request_.keep_alive());
    response_.body() = std::move(answer_.body);
    if (request_.method() == http::verb::head) {
      response_.content_length(response_.body().size());
      response_.body().clear();
    } else {
      response_.prepare_payload();
    }
    beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
    http::async_write(stream_, response_,
                      beast::bind_front_handler(&Session::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec) return;
    if (response_.need_eof()) return close();
    read();
  }

  void close() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  std::shared_ptr<State> state_;
  Stream stream_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  FakeResponse answer_;
  http::response<http::string_body> response_;
};

}  // namespace

std::string FakeRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return "";
}

struct FakeHttpServer::Impl {
  Options options;
  std::shared_ptr<State> state = std::make_shared<State>();
  std::optional<ssl::context> tls;
  asio::io_context io{kThreads};
  tcp::acceptor acceptor{io};
  int port = 0;
  std::vector<std::thread> threads;

  void accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket s) {
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      } else {
        state->connections.fetch_add(1);
        if (tls) {
          std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(state, std::move(s),
                                                                         *tls)
              ->run();
        } else {
          std::make_shared<Session<beast::tcp_stream>>(state, std::move(s))->run();
        }
      }
      accept();
    });
  }
};

FakeHttpServer::FakeHttpServer(Handler handler, Options options) : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->state->handler = std::make_shared<const Handler>(std::move(handler));
  if (impl_->options.tls) {
    impl_->tls.emplace(ssl::context::tls_server);
    impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1);
    impl_->tls->use_certificate_chain_file(impl_->options.cert_file);
    impl_->tls->use_private_key_file(impl_->options.key_file, ssl::context::pem);
  }
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->accept();
  for (int i = 0; i < kThreads; ++i) {
    impl_->threads.emplace_back([io = &impl_->io] { io->run(); });
  }
}

FakeHttpServer::~FakeHttpServer() {
  // Stopping the io_context abandons every connection mid-step; their sessions are destroyed
  // with it, closing the sockets, and touch nothing but the shared state.
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
}

int FakeHttpServer::port() const { return impl_->port; }

std::string FakeHttpServer::base_url() const {
  return std::string(impl_->options.tls ? "https" : "http") + "://127.0.0.1:" +
         std::to_string(impl_->port);
}

std::vector<FakeRequest> FakeHttpServer::requests() const {
  std::lock_guard lock(impl_->state->mutex);
  return impl_->state->requests;
}

std::size_t FakeHttpServer::request_count() const {
  std::lock_guard lock(impl_->state->mutex);
  return impl_->state->requests.size();
}

std::size_t FakeHttpServer::connections_accepted() const { return impl_->state->connections; }

void FakeHttpServer::set_handler(Handler handler) {
  auto next = std::make_shared<const Handler>(std::move(handler));
  std::lock_guard lock(impl_->state->mutex);
  impl_->state->handler = std::move(next);
}

void FakeHttpServer::clear_requests() {
  std::lock_guard lock(impl_->state->mutex);
  impl_->state->requests.clear();
}

}  // namespace orgd::testing
