#include "daemon/net/connection.hpp"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

namespace orgd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

constexpr std::size_t kHeaderLimit = std::size_t{64} * 1024;

std::string ms(milliseconds d) { return std::to_string(d.count()) + " ms"; }

// The TLS failure in words: the certificate check's verdict when there is one, else OpenSSL's
// reason, never Asio's bare "stream truncated".
std::string tls_reason(SSL* ssl, const boost::system::error_code& ec) {
  if (ssl != nullptr) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      return std::string{"certificate verify failed ("} + X509_verify_cert_error_string(verify) +
             ")";
    }
  }
  if (ec == asio::ssl::error::stream_truncated) {
    return "the server closed the connection during the handshake";
  }
  if (ec.category() == asio::error::get_ssl_category()) {
    const auto code = static_cast<unsigned long>(ec.value());
    const char* reason = ERR_reason_error_string(code);
    if (reason != nullptr) return reason;
  }
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

// getaddrinfo on a thread of its own, waited for at most `timeout`: a resolver that hangs is
// left to finish alone (Asio's resolver would be joined when its io_context goes, holding the
// caller past its timeout).
Outcome<std::vector<tcp::endpoint>> resolve(const std::string& host, const std::string& port,
                                            milliseconds timeout) {
  struct Lookup {
    std::mutex mutex;  // guards the members below
    std::condition_variable done_cv;
    bool done = false;
    int rc = 0;
    std::vector<tcp::endpoint> endpoints;
  };
  auto lookup = std::make_shared<Lookup>();
  std::thread([lookup, host, port] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
    std::vector<tcp::endpoint> endpoints;
    for (const addrinfo* a = list; rc == 0 && a != nullptr; a = a->ai_next) {
      if (a->ai_family == AF_INET || a->ai_family == AF_INET6) {
        tcp::endpoint e;
        std::memcpy(e.data(), a->ai_addr, a->ai_addrlen);
        e.resize(a->ai_addrlen);
        endpoints.push_back(e);
      }
    }
    if (list != nullptr) ::freeaddrinfo(list);
    std::lock_guard lock(lookup->mutex);
    lookup->rc = rc;
    lookup->endpoints = std::move(endpoints);
    lookup->done = true;
    lookup->done_cv.notify_all();
  }).detach();
  std::unique_lock lock(lookup->mutex);
  if (!lookup->done_cv.wait_for(lock, timeout, [&] { return lookup->done; })) {
    return {std::nullopt,
            {FailureKind::timeout, "resolving " + host + " timed out after " + ms(timeout)}};
  }
  if (lookup->rc != 0 || lookup->endpoints.empty()) {
    return {std::nullopt,
            {FailureKind::dns, "resolving " + host + " failed: " +
                                   (lookup->rc != 0 ? gai_strerror(lookup->rc) : "no address")}};
  }
  return {std::move(lookup->endpoints), {}};
}

}  // namespace

std::string_view failure_kind_name(FailureKind kind) {
  switch (kind) {
    case FailureKind::dns:
      return "dns";
    case FailureKind::connect:
      return "connect";
    case FailureKind::proxy:
      return "proxy";
    case FailureKind::tls:
      return "tls";
    case FailureKind::timeout:
      return "timeout";
    case FailureKind::closed:
      return "closed";
    case FailureKind::protocol:
      return "protocol";
    case FailureKind::body_limit:
      return "body_limit";
  }
  return "protocol";
}

Connection::Connection(std::string peer) : peer_(std::move(peer)) {}

Connection::~Connection() { close(); }

void Connection::close() {
  boost::system::error_code ignored;
  // No TLS close_notify: it would need a round trip, and the server does not wait for it.
  if (tls_) beast::get_lowest_layer(*tls_).socket().close(ignored);
  if (plain_) plain_->socket().close(ignored);
}

beast::tcp_stream& Connection::lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

template <class Start>
boost::system::error_code Connection::run(Start&& start) {
  boost::system::error_code result = asio::error::would_block;
  start([&result](boost::system::error_code ec, auto&&...) { result = ec; });
  ioc_.restart();
  ioc_.run();
  return result;
}

Outcome<std::unique_ptr<Connection>> Connection::open(const Route& route, asio::ssl::context* tls,
                                                      milliseconds connect_timeout) {
  const std::string peer = route.url.authority();
  std::unique_ptr<Connection> c{new Connection(peer)};
  const auto started = std::chrono::steady_clock::now();
  auto left = [&] {
    const auto spent =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
    return std::max(milliseconds{1}, connect_timeout - spent);
  };
  const std::string via = route.proxy ? " (through proxy " + route.proxy->display() + ")" : "";

  // Resolve: the proxy's name when tunnelling (the proxy resolves the origin), else the origin.
  const std::string dial_host =
      route.proxy ? route.proxy->host
                  : (route.connect_address.empty() ? route.url.host : route.connect_address);
  const std::string dial_port = std::to_string(route.proxy ? route.proxy->port : route.url.port);
  const std::string dial = route.proxy ? route.proxy->display() : peer;
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code ec;
  const auto literal = asio::ip::make_address(dial_host, ec);
  if (!ec) {
    // An address needs no lookup (nor its thread).
    endpoints.emplace_back(literal, static_cast<unsigned short>(std::stoi(dial_port)));
  } else {
    ec.clear();
    auto found = resolve(dial_host, dial_port, left());
    if (!found.ok()) return {std::nullopt, std::move(found.failure)};
    endpoints = std::move(*found.value);
  }

  auto stream = std::make_unique<beast::tcp_stream>(c->ioc_);
  stream->expires_after(left());
  ec = c->run([&](auto handler) { stream->async_connect(endpoints, std::move(handler)); });
  if (ec == beast::error::timeout) {
    return {std::nullopt,
            {FailureKind::timeout,
             "connecting to " + dial + " timed out after " + ms(connect_timeout)}};
  }
  if (ec) {
    return {std::nullopt,
            {route.proxy ? FailureKind::proxy : FailureKind::connect,
             "connecting to " + (route.proxy ? "proxy " : std::string{}) + dial +
                 " failed: " + ec.message()}};
  }
  stream->socket().set_option(tcp::no_delay(true), ec);

  if (route.proxy != nullptr) {
    std::string head = "CONNECT " + peer + " HTTP/1.1\r\nHost: " + peer + "\r\n";
    std::vector<asio::const_buffer> out{asio::buffer(head)};
    static constexpr std::string_view kAuth = "Proxy-Authorization: ";
    static constexpr std::string_view kEnd = "\r\n";
    if (route.proxy->authorization) {
      out.emplace_back(asio::buffer(kAuth));
      out.emplace_back(asio::buffer(route.proxy->authorization->expose()));
      out.emplace_back(asio::buffer(kEnd));
    }
    out.emplace_back(asio::buffer(kEnd));
    stream->expires_after(left());
    ec = c->run([&](auto handler) { asio::async_write(*stream, out, std::move(handler)); });
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // a 2xx to CONNECT has no body: the tunnel follows
    if (!ec) {
      stream->expires_after(left());
      ec = c->run([&](auto handler) {
        http::async_read_header(*stream, c->buffer_, parser, std::move(handler));
      });
    }
    if (ec) {
      return {std::nullopt,
              {ec == beast::error::timeout ? FailureKind::timeout : FailureKind::proxy,
               "CONNECT to " + peer + " through proxy " + route.proxy->display() +
                   " failed: " + (ec == beast::error::timeout ? "timed out" : ec.message())}};
    }
    const int status = static_cast<int>(parser.get().result_int());
    if (status < 200 || status > 299) {
      Failure f{FailureKind::proxy, "proxy " + route.proxy->display() + " refused the tunnel to " +
                                        peer + ": HTTP " + std::to_string(status)};
      f.permanent = status == 407 || status == 403;
      return {std::nullopt, std::move(f)};
    }
    c->buffer_.consume(c->buffer_.size());
  }

  if (tls == nullptr) {
    c->plain_ = std::move(stream);
    return {std::move(c), {}};
  }

  c->tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*stream), *tls);
  stream.reset();
  SSL* ssl = c->tls_->native_handle();
  const std::string& host = route.url.host;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip_literal(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    // SNI is sent for names only (RFC 6066 forbids IP literals in it).
    SSL_set_tlsext_host_name(ssl, host.c_str());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  }
  beast::get_lowest_layer(*c->tls_).expires_after(left());
  ec = c->run([&](auto handler) {
    c->tls_->async_handshake(asio::ssl::stream_base::client, std::move(handler));
  });
  if (ec) {
    const bool timed_out = ec == beast::error::timeout;
    Failure f{timed_out ? FailureKind::timeout : FailureKind::tls,
              "TLS handshake with " + peer + via + " failed: " +
                  (timed_out ? "timed out after " + ms(connect_timeout) : tls_reason(ssl, ec))};
    f.permanent = SSL_get_verify_result(ssl) != X509_V_OK;
    return {std::nullopt, std::move(f)};
  }
  return {std::move(c), {}};
}

Outcome<bool> Connection::write(const std::vector<asio::const_buffer>& buffers,
                                milliseconds timeout) {
  lowest().expires_after(timeout);
  const auto ec = run([&](auto handler) {
    if (tls_) {
      asio::async_write(*tls_, buffers, std::move(handler));
    } else {
      asio::async_write(*plain_, buffers, std::move(handler));
    }
  });
  if (!ec) return {true, {}};
  if (ec == beast::error::timeout) {
    return {std::nullopt,
            {FailureKind::timeout,
             "sending the request to " + peer_ + " timed out after " + ms(timeout)}};
  }
  return {std::nullopt,
          {FailureKind::closed, "sending the request to " + peer_ + " failed: " + ec.message()}};
}

Outcome<Connection::Answer> Connection::read(bool head, std::size_t max_body,
                                             milliseconds timeout) {
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(max_body);
  if (head) parser.skip(true);
  const std::size_t buffered = buffer_.size();
  lowest().expires_after(timeout);
  // The header first: a declared length over the limit is refused before any of the body is
  // read (Beast 1.74's asynchronous read does not apply the parser's body limit to a
  // Content-Length by itself; chunked and until-close bodies it does limit).
  auto ec = run([&](auto handler) {
    if (tls_) {
      http::async_read_header(*tls_, buffer_, parser, std::move(handler));
    } else {
      http::async_read_header(*plain_, buffer_, parser, std::move(handler));
    }
  });
  if (!ec && !parser.is_done()) {
    if (const auto length = parser.content_length(); length && *length > max_body) {
      ec = http::error::body_limit;
    }
  }
  if (!ec && !parser.is_done()) {
    ec = run([&](auto handler) {
      if (tls_) {
        http::async_read(*tls_, buffer_, parser, std::move(handler));
      } else {
        http::async_read(*plain_, buffer_, parser, std::move(handler));
      }
    });
  }
  if (!ec && parser.get().body().size() > max_body) ec = http::error::body_limit;
  if (ec) {
    Failure f;
    f.nothing_received = !parser.got_some() && buffered == 0;
    if (ec == http::error::body_limit) {
      f.kind = FailureKind::body_limit;
      f.message = "the response from " + peer_ + " is over the body limit of " +
                  std::to_string(max_body) + " bytes (max_response_bytes)";
    } else if (ec == beast::error::timeout) {
      f.kind = FailureKind::timeout;
      f.message =
          "no complete response from " + peer_ + " within " + ms(timeout) + " (read timeout)";
    } else if (ec == http::error::end_of_stream || ec == asio::error::eof ||
               ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated ||
               ec == http::error::partial_message) {
      f.kind = FailureKind::closed;
      f.message =
          std::string{peer_} + " closed the connection " +
          (f.nothing_received ? "before answering" : "in the middle of its response") +
          (tls_ && ec == asio::ssl::error::stream_truncated ? " (TLS: no close_notify)" : "");
    } else if (ec.category() == http::make_error_code(http::error::body_limit).category()) {
      f.kind = FailureKind::protocol;
      f.message = "the response from " + peer_ + " is not valid HTTP/1.1: " + ec.message();
    } else {
      f.kind = tls_ && ec.category() == asio::error::get_ssl_category() ? FailureKind::tls
                                                                        : FailureKind::closed;
      f.message = "reading the response from " + peer_ + " failed: " +
                  (f.kind == FailureKind::tls ? "TLS: " + tls_reason(nullptr, ec) : ec.message());
    }
    return {std::nullopt, std::move(f)};
  }
  auto& message = parser.get();
  Answer answer;
  answer.response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    answer.response.headers.push_back(
        {std::string{field.name_string()}, std::string{field.value()}});
  }
  answer.response.body = std::move(message.body());
  answer.keep_alive = message.keep_alive() && parser.is_done();
  return {std::move(answer), {}};
}

bool Connection::looks_alive() const {
  const auto& stream = tls_ ? beast::get_lowest_layer(*tls_) : *plain_;
  // Not const in Asio; reading the descriptor does not change the stream.
  const int fd = const_cast<beast::tcp_stream&>(stream).socket().native_handle();
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  const int n = ::poll(&p, 1, 0);
  // Readable while idle: the server's close (EOF, TLS close_notify) or bytes nobody asked for.
  return n == 0;
}

}  // namespace orgd::net
