#include "tests/support/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace orgd::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

std::optional<HttpResult> http_request(const std::string& host, std::uint16_t port,
                                       const std::string& method, const std::string& target,
                                       const std::string& body,
                                       std::chrono::milliseconds timeout) {
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(timeout);
    asio::ip::tcp::endpoint ep(asio::ip::make_address(host), port);
    stream.connect(ep);
    http::request<http::string_body> req(http::string_to_verb(method), target, 11);
    req.set(http::field::host, host);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buffer, parser);
    auto res = parser.release();
    HttpResult out;
    out.status = static_cast<int>(res.result_int());
    out.body = res.body();
    out.content_type = std::string(res[http::field::content_type]);
    beast::error_code ec;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    return out;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace orgd::testing
