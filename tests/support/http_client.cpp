#include "tests/support/http_client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace orgd::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

namespace {

HttpResult to_result(const http::response<http::string_body>& res) {
  HttpResult out;
  out.status = static_cast<int>(res.result_int());
  out.body = res.body();
  out.content_type = std::string(res[http::field::content_type]);
  for (const auto& field : res) {
    out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return out;
}

// The stream's timeout applies to asynchronous operations only, so each step runs as one and
// the io_context is driven until it ends: a server that never answers cannot hang the test.
bool connect(asio::io_context& io, beast::tcp_stream& stream, const std::string& host,
             std::uint16_t port, std::chrono::milliseconds timeout) {
  beast::error_code result;
  try {
    stream.expires_after(timeout);
    stream.async_connect({asio::ip::make_address(host), port},
                         [&](beast::error_code ec) { result = ec; });
  } catch (const std::exception&) {
    return false;
  }
  io.restart();
  io.run();
  return !result;
}

std::optional<http::response<http::string_body>> exchange(asio::io_context& io,
                                                          beast::tcp_stream& stream,
                                                          beast::flat_buffer& buffer,
                                                          http::request<http::string_body>& req,
                                                          std::chrono::milliseconds timeout) {
  beast::error_code result;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  stream.expires_after(timeout);
  http::async_write(stream, req, [&](beast::error_code ec, std::size_t) {
    if (ec) {
      result = ec;
      return;
    }
    http::async_read(stream, buffer, parser,
                     [&](beast::error_code read_ec, std::size_t) { result = read_ec; });
  });
  io.restart();
  io.run();
  if (result) return std::nullopt;
  return parser.release();
}

}  // namespace

std::string HttpResult::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (beast::iequals(n, name)) return v;
  }
  return "";
}

std::optional<HttpResult> http_request(const std::string& host, std::uint16_t port,
                                       const std::string& method, const std::string& target,
                                       const std::string& body,
                                       std::chrono::milliseconds timeout) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  if (!connect(io, stream, host, port, timeout)) return std::nullopt;
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, host);
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buffer;
  auto res = exchange(io, stream, buffer, req, timeout);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  if (!res) return std::nullopt;
  return to_result(*res);
}

struct HttpConnection::Impl {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  std::chrono::milliseconds timeout{};
  bool open = false;
};

HttpConnection::HttpConnection(std::uint16_t port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->timeout = timeout;
  impl_->open = connect(impl_->io, impl_->stream, "127.0.0.1", port, timeout);
}

HttpConnection::~HttpConnection() {
  beast::error_code ignored;
  impl_->stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

bool HttpConnection::open() const { return impl_->open; }

std::optional<HttpResult> HttpConnection::request(
    const std::string& method, const std::string& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!impl_->open) return std::nullopt;
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers) req.insert(name, value);
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();
  auto res = exchange(impl_->io, impl_->stream, impl_->buffer, req, impl_->timeout);
  if (!res) {
    impl_->open = false;
    return std::nullopt;
  }
  if (!res->keep_alive()) impl_->open = false;
  return to_result(*res);
}

}  // namespace orgd::testing
