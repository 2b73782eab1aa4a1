#include "tests/fakes/fake_github.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon/core/secret.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/test_pki.hpp"

namespace orgd::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const char* kToken = "ghp_integrationToken0123456789abcdefAB";
const std::vector<std::pair<std::string, std::string>> kAuth = {
    {"Authorization", std::string("Bearer ") + kToken},
    {"Accept", "application/vnd.github+json"},
    {"X-GitHub-Api-Version", "2022-11-28"}};

std::string b64(const std::string& bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string unb64(const std::string& text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                    text.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL);
  out.resize(len);
  return out;
}

// The body of a secret PUT for `value`, sealed with orgd's own helper to the key the fake
// published over the wire.
std::string sealed_body(HttpConnection& c, const std::string& base, const std::string& value,
                        json extra = json::object()) {
  auto key = c.request("GET", base + "/public-key", "", kAuth);
  EXPECT_TRUE(key && key->status == 200);
  json k = json::parse(key->body);
  auto sealed = seal_to(unb64(k["key"].get<std::string>()), Secret::from(value));
  EXPECT_TRUE(sealed.ok());
  extra["encrypted_value"] = b64(sealed.value());
  extra["key_id"] = k["key_id"];
  return extra.dump();
}

TEST(FakeGithubOverHttp, SecretsRoundTripOnOneKeptAliveConnection) {
  FakeGithubServer fake;
  fake.github().add_token(kToken);
  HttpConnection c(static_cast<std::uint16_t>(fake.http().port()));
  const std::string base = "/repos/acme/web/actions/secrets";
  for (int i = 0; i < 35; ++i) {
    auto put = c.request("PUT", base + "/S" + std::to_string(i),
                         sealed_body(c, base, "value-" + std::to_string(i)), kAuth);
    ASSERT_TRUE(put);
    ASSERT_EQ(put->status, 201) << put->body;
    EXPECT_EQ(put->header("x-ratelimit-resource"), "core");
  }
  EXPECT_EQ(fake.github().secret_value(SecretScope::repository("acme", "web"), "S34"), "value-34");

  auto list = c.request("GET", base, "", kAuth);
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body)["total_count"], 35);
  // Links point at the server itself, so a client can follow them as they are.
  EXPECT_EQ(list->header("link"), "<" + fake.base_url() + base + "?page=2>; rel=\"next\", <" +
                                      fake.base_url() + base + "?page=2>; rel=\"last\"");
  EXPECT_EQ(fake.http().connections_accepted(), 1u);
  EXPECT_EQ(fake.github().count("PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}"), 35u);
  EXPECT_EQ(fake.github().calls().size(), fake.http().request_count());
}

TEST(FakeGithubOverHttp, ConcurrentClientsAllLand) {
  FakeGithubServer fake;
  fake.github().add_token(kToken);
  const std::string base = "/orgs/acme/actions/secrets";
  constexpr int kClients = 4, kEach = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      HttpConnection c(static_cast<std::uint16_t>(fake.http().port()));
      for (int i = 0; i < kEach; ++i) {
        const std::string name = "C" + std::to_string(t) + "_" + std::to_string(i);
        auto put = c.request("PUT", base + "/" + name,
                             sealed_body(c, base, name, json{{"visibility", "private"}}), kAuth);
        if (!put || put->status != 201) ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
  const auto names = fake.github().secret_names(SecretScope::org("acme"));
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kClients * kEach));
  EXPECT_EQ(fake.github().secret_value(SecretScope::org("acme"), "C3_24"), "C3_24");
  EXPECT_EQ(fake.github().rate_limit_remaining(), 5000 - 2 * kClients * kEach);
}

TEST(FakeGithubOverHttp, SlowAndDroppedAnswersReachTheClient) {
  FakeGithubServer fake;
  fake.github().add_token(kToken);
  HttpConnection c(static_cast<std::uint16_t>(fake.http().port()));
  fake.github().inject(FakeFault::slow(300ms));
  const auto start = std::chrono::steady_clock::now();
  auto slow = c.request("GET", "/rate_limit", "", kAuth);
  ASSERT_TRUE(slow);
  EXPECT_EQ(slow->status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);

  const std::string base = "/repos/acme/web/actions/secrets";
  fake.github().inject(
      FakeFault::dropped().on("PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}"));
  EXPECT_FALSE(c.request("PUT", base + "/LOST", sealed_body(c, base, "v"), kAuth));
  // The work was done though the answer never came.
  EXPECT_EQ(fake.github().secret_value(SecretScope::repository("acme", "web"), "LOST"), "v");

  fake.github().inject(FakeFault::server_errors(2, 503));
  HttpConnection again(static_cast<std::uint16_t>(fake.http().port()));
  EXPECT_EQ(again.request("GET", base, "", kAuth)->status, 503);
  EXPECT_EQ(again.request("GET", base, "", kAuth)->status, 503);
  EXPECT_EQ(again.request("GET", base, "", kAuth)->status, 200);
}

TEST(FakeGithubOverHttp, ServesTlsWithTheTestCa) {
  TestPki pki;
  ASSERT_TRUE(pki.make());
  FakeGithubServer fake({}, {true, pki.path("server.pem"), pki.path("server-key.pem")});
  fake.github().add_token(kToken);
  EXPECT_EQ(fake.base_url().rfind("https://127.0.0.1:", 0), 0u);

  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(pki.path("ca.pem"));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(io, ctx);
  stream.set_verify_callback(asio::ssl::host_name_verification("127.0.0.1"));
  beast::get_lowest_layer(stream).connect(
      {asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(fake.http().port())});
  stream.handshake(asio::ssl::stream_base::client);
  http::request<http::string_body> req(http::verb::get, "/repos/acme/web/actions/secrets?per_page=1",
                                       11);
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::authorization, std::string("token ") + kToken);
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(json::parse(res.body())["total_count"], 0);
  EXPECT_EQ(fake.github().calls().at(0).header("authorization"), std::string("token ") + kToken);
}

}  // namespace
}  // namespace orgd::testing
