#include "tests/fakes/http_server.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <set>
#include <thread>

#include "tests/support/http_client.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

FakeResponse echo(const FakeRequest& r) {
  return FakeResponse{200, {{"X-Path", r.path}}, r.method + " " + r.target + " " + r.body};
}

TEST(FakeHttpServer, RecordsEveryRequestInOrderWithHeadersQueryAndBody) {
  FakeHttpServer server(echo);
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  auto first = c.request("POST", "/repos/o/r/dispatches?x=1&y=2", R"({"ref":"main"})",
                         {{"Authorization", "Bearer abc"}, {"X-GitHub-Api-Version", "2022-11-28"}});
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, R"(POST /repos/o/r/dispatches?x=1&y=2 {"ref":"main"})");
  EXPECT_EQ(first->header("x-path"), "/repos/o/r/dispatches");
  auto second = c.request("GET", "/rate_limit");
  ASSERT_TRUE(second);

  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/repos/o/r/dispatches?x=1&y=2");
  EXPECT_EQ(seen[0].path, "/repos/o/r/dispatches");
  EXPECT_EQ(seen[0].query, "x=1&y=2");
  EXPECT_EQ(seen[0].body, R"({"ref":"main"})");
  EXPECT_EQ(seen[0].header("authorization"), "Bearer abc");
  EXPECT_EQ(seen[0].header("X-GITHUB-API-VERSION"), "2022-11-28");
  EXPECT_EQ(seen[0].header("x-absent"), "");
  EXPECT_EQ(seen[1].method, "GET");
  EXPECT_EQ(seen[1].path, "/rate_limit");
  EXPECT_EQ(seen[1].query, "");
  EXPECT_EQ(server.request_count(), 2u);
  server.clear_requests();
  EXPECT_TRUE(server.requests().empty());
}

TEST(FakeHttpServer, KeepAliveServesManyRequestsOnOneConnection) {
  FakeHttpServer server(echo);
  EXPECT_EQ(server.base_url(), "http://127.0.0.1:" + std::to_string(server.port()));
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  for (int i = 0; i < 5; ++i) {
    auto r = c.request("GET", "/n/" + std::to_string(i));
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, "GET /n/" + std::to_string(i) + " ");
  }
  EXPECT_TRUE(c.open());
  EXPECT_EQ(server.connections_accepted(), 1u);
  // A second client is a second connection: the count really counts connections.
  HttpConnection other(static_cast<std::uint16_t>(server.port()));
  ASSERT_TRUE(other.request("GET", "/other"));
  EXPECT_EQ(server.connections_accepted(), 2u);
  EXPECT_EQ(server.request_count(), 6u);
}

TEST(FakeHttpServer, ConnectionCloseFromTheHandlerEndsTheConnection) {
  FakeHttpServer server([](const FakeRequest&) {
    return FakeResponse{503, {{"Connection", "close"}}, "bye"};
  });
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  auto r = c.request("GET", "/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_FALSE(c.open());
  EXPECT_FALSE(c.request("GET", "/again"));
}

TEST(FakeHttpServer, DelayHoldsTheAnswer) {
  FakeHttpServer server([](const FakeRequest& r) {
    FakeResponse out{200, {}, "late"};
    if (r.path == "/slow") out.delay = 400ms;
    return out;
  });
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  auto start = Clock::now();
  auto r = c.request("GET", "/slow");
  auto took = Clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "late");
  EXPECT_GE(took, 400ms);
  // A client that gives up sooner sees no answer at all.
  auto gave_up = http_request("127.0.0.1", static_cast<std::uint16_t>(server.port()), "GET",
                              "/slow", "", 100ms);
  EXPECT_FALSE(gave_up);
}

TEST(FakeHttpServer, DropClosesTheConnectionWithoutAnAnswer) {
  FakeHttpServer server([](const FakeRequest& r) {
    FakeResponse out{200, {}, "fine"};
    out.drop = r.path == "/drop";
    return out;
  });
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  ASSERT_TRUE(c.request("GET", "/ok"));
  EXPECT_FALSE(c.request("GET", "/drop"));
  EXPECT_FALSE(c.open());
  // The dropped request was still received and recorded, and the server goes on serving.
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].path, "/drop");
  HttpConnection next(static_cast<std::uint16_t>(server.port()));
  auto r = next.request("GET", "/ok");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "fine");
}

TEST(FakeHttpServer, SetHandlerChangesLaterAnswersAndAThrowingHandlerGives500) {
  FakeHttpServer server(echo);
  HttpConnection c(static_cast<std::uint16_t>(server.port()));
  ASSERT_EQ(c.request("GET", "/a")->status, 200);
  server.set_handler([](const FakeRequest&) -> FakeResponse { throw std::runtime_error("boom"); });
  auto r = c.request("GET", "/b");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("boom"), std::string::npos);
}

TEST(FakeHttpServer, ConcurrentConnectionsEachGetTheirOwnAnswers) {
  FakeHttpServer server([](const FakeRequest& r) {
    return FakeResponse{200, {}, r.path + "|" + r.body};
  });
  constexpr int kClients = 6, kEach = 25;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      HttpConnection conn(static_cast<std::uint16_t>(server.port()));
      for (int i = 0; i < kEach; ++i) {
        std::string id = std::to_string(c) + "-" + std::to_string(i);
        auto r = conn.request("POST", "/c/" + id, "body " + id);
        if (!r) {
          ++failed;
          return;
        }
        if (r->body != "/c/" + id + "|body " + id) ++wrong;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(server.connections_accepted(), static_cast<std::size_t>(kClients));
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(kClients * kEach));
  std::set<std::string> paths;
  for (const auto& r : seen) paths.insert(r.path);
  EXPECT_EQ(paths.size(), seen.size());
}

TEST(FakeHttpServer, ADelayedAnswerDoesNotHoldOtherConnections) {
  FakeHttpServer server([](const FakeRequest& r) {
    FakeResponse out{200, {}, r.path};
    if (r.path == "/slow") out.delay = 2s;
    return out;
  });
  std::atomic<bool> slow_done{false};
  std::thread slow([&] {
    HttpConnection c(static_cast<std::uint16_t>(server.port()));
    c.request("GET", "/slow");
    slow_done = true;
  });
  ASSERT_TRUE(wait_until([&] { return server.request_count() == 1; }, 5s));
  // Several quick answers on other connections while the slow one is still held.
  for (int i = 0; i < 3; ++i) {
    HttpConnection c(static_cast<std::uint16_t>(server.port()));
    auto r = c.request("GET", "/quick");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "/quick");
  }
  EXPECT_FALSE(slow_done);
  slow.join();
  EXPECT_TRUE(slow_done);
}

TEST(FakeHttpServer, ServesTlsWithTheTestCertificate) {
  TestPki pki;
  ASSERT_TRUE(pki.make());
  FakeHttpServer server(echo, {true, pki.path("server.pem"), pki.path("server-key.pem")});
  EXPECT_EQ(server.base_url(), "https://127.0.0.1:" + std::to_string(server.port()));

  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(pki.path("ca.pem"));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(io, ctx);
  stream.set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
  beast::get_lowest_layer(stream).expires_after(10s);
  beast::get_lowest_layer(stream).connect(
      {asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(server.port())});
  stream.handshake(asio::ssl::stream_base::client);
  beast::flat_buffer buffer;
  for (int i = 0; i < 2; ++i) {
    http::request<http::string_body> req(http::verb::put, "/tls/" + std::to_string(i), 11);
    req.set(http::field::host, "127.0.0.1");
    req.body() = "sealed";
    req.prepare_payload();
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "PUT /tls/" + std::to_string(i) + " sealed");
  }
  EXPECT_EQ(server.connections_accepted(), 1u);
  ASSERT_EQ(server.request_count(), 2u);
  EXPECT_EQ(server.requests()[1].body, "sealed");
  // A plain-HTTP client gets nothing from a TLS server.
  EXPECT_FALSE(http_request("127.0.0.1", static_cast<std::uint16_t>(server.port()), "GET", "/",
                            "", 2s));
}

}  // namespace
}  // namespace orgd::testing
