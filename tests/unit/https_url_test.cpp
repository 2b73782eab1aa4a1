#include <gtest/gtest.h>

#include "daemon/net/url.hpp"

namespace orgd::net {
namespace {

TEST(HttpsUrl, SplitsSchemeHostPortAndTarget) {
  auto u = parse_url("https://API.GitHub.com/repos/acme/api?per_page=100#frag");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(u.value().scheme, "https");
  EXPECT_EQ(u.value().host, "api.github.com");
  EXPECT_EQ(u.value().port, 443);
  EXPECT_EQ(u.value().target, "/repos/acme/api?per_page=100");
  EXPECT_EQ(u.value().host_header(), "api.github.com");
  EXPECT_EQ(u.value().authority(), "api.github.com:443");
  EXPECT_EQ(u.value().redacted(), "https://api.github.com/repos/acme/api");

  auto plain = parse_url("http://127.0.0.1:8080");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain.value().port, 8080);
  EXPECT_EQ(plain.value().target, "/");
  EXPECT_EQ(plain.value().host_header(), "127.0.0.1:8080");

  auto query_only = parse_url("https://h.example?x=1");
  ASSERT_TRUE(query_only.ok());
  EXPECT_EQ(query_only.value().target, "/?x=1");
}

TEST(HttpsUrl, ReadsIpv6LiteralsAndUserInformation) {
  auto u = parse_url("http://[::1]:9000/x");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(u.value().host, "::1");
  EXPECT_EQ(u.value().authority(), "[::1]:9000");

  auto p = parse_url("http://user:pa%40ss@proxy.corp:3128");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p.value().userinfo, "user:pa%40ss");
  EXPECT_EQ(p.value().host, "proxy.corp");
  EXPECT_EQ(p.value().redacted(), "http://proxy.corp:3128/");
}

TEST(HttpsUrl, RefusesWhatIsNotAnAbsoluteHttpUrl) {
  for (const char* bad :
       {"api.github.com/x", "ftp://h/x", "https:///x", "https://h:0/", "https://h:70000/",
        "https://h:8a/", "https://[::1/", "https://h/a b", "https://ho st/"}) {
    auto u = parse_url(bad);
    ASSERT_FALSE(u.ok()) << bad;
    EXPECT_EQ(u.error().code, ErrorCode::invalid_argument) << bad;
    EXPECT_EQ(u.error().retry, Retry::permanent) << bad;
  }
  // The message never repeats user information.
  auto u = parse_url("https://user:canary-secret@h:99999/");
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.error().message.find("canary-secret"), std::string::npos) << u.error().message;
}

TEST(HttpsUrl, KnowsLoopbackHosts) {
  for (const char* h :
       {"127.0.0.1", "127.10.0.3", "::1", "localhost", "LOCALHOST", "api.localhost"}) {
    EXPECT_TRUE(is_loopback_host(h)) << h;
  }
  for (const char* h : {"128.0.0.1", "10.0.0.1", "api.github.com", "localhost.example.com", "::2",
                        "127.0.0.1.nip.io"}) {
    EXPECT_FALSE(is_loopback_host(h)) << h;
  }
  EXPECT_TRUE(is_ip_literal("10.1.2.3"));
  EXPECT_TRUE(is_ip_literal("fe80::1"));
  EXPECT_FALSE(is_ip_literal("example.com"));
}

// Every HTTP provider's api_url (github, cloudflare, synadia) goes through this one check.
TEST(ApiUrl, HttpsOrLoopbackHttpWithoutCredentialsQueryOrFragment) {
  std::string why;
  EXPECT_TRUE(acceptable_api_url("https://api.github.com", why));
  EXPECT_TRUE(acceptable_api_url("https://ghe.example.com:8443/api/v3", why));
  EXPECT_TRUE(acceptable_api_url("http://127.0.0.1:4000", why));
  EXPECT_TRUE(acceptable_api_url("http://localhost:4000", why));
  EXPECT_TRUE(acceptable_api_url("http://[::1]:4000", why));
  EXPECT_FALSE(acceptable_api_url("http://10.0.0.1", why));
  EXPECT_FALSE(acceptable_api_url("http://127.0.0.1.evil.com", why));
  EXPECT_FALSE(acceptable_api_url("http://localhost.evil.com", why));
  EXPECT_FALSE(acceptable_api_url("ftp://api.github.com", why));
  EXPECT_FALSE(acceptable_api_url("https://user:pw@api.github.com", why));
  EXPECT_FALSE(acceptable_api_url("https://api.github.com?x=1", why));
  EXPECT_FALSE(acceptable_api_url("https://:443", why));
  EXPECT_FALSE(acceptable_api_url("https://host:99999x", why));
  EXPECT_TRUE(acceptable_api_url("https://api.cloudflare.com/client/v4", why));
  EXPECT_TRUE(acceptable_api_url("http://localhost:9000", why));
  EXPECT_TRUE(acceptable_api_url("http://[::1]:9000/client/v4", why));
  EXPECT_FALSE(acceptable_api_url("ftp://api.cloudflare.com", why));
  EXPECT_FALSE(acceptable_api_url("http://10.0.0.1/client/v4", why));
  EXPECT_FALSE(acceptable_api_url("https://api.cloudflare.com/#x", why));
}

}  // namespace
}  // namespace orgd::net
