#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "daemon/net/proxy.hpp"

namespace orgd::net {
namespace {

std::string base64_decode(std::string_view text) {
  std::string out(text.size(), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '\0') out.pop_back();  // the padding's bytes
  return out;
}

TEST(HttpsProxy, ParsesHostPortAndCredentials) {
  auto p = parse_proxy("http://bob:s3cr%3At@proxy.corp:3128/");
  ASSERT_TRUE(p.ok()) << p.error().message;
  ASSERT_NE(p.value(), nullptr);
  EXPECT_EQ(p.value()->host, "proxy.corp");
  EXPECT_EQ(p.value()->port, 3128);
  EXPECT_EQ(p.value()->display(), "proxy.corp:3128");
  ASSERT_NE(p.value()->authorization, nullptr);
  const std::string_view auth = p.value()->authorization->expose();
  ASSERT_TRUE(auth.starts_with("Basic "));
  EXPECT_EQ(base64_decode(auth.substr(6)), "bob:s3cr:t");
  EXPECT_EQ(fmt::format("{}", *p.value()->authorization), "***");
}

TEST(HttpsProxy, SchemeIsOptionalPortDefaults80AndEmptyMeansNone) {
  auto p = parse_proxy("proxy.corp");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p.value()->port, 80);
  EXPECT_EQ(p.value()->authorization, nullptr);
  auto none = parse_proxy("  ");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none.value(), nullptr);
  auto user_only = parse_proxy("http://bob@proxy.corp:8080");
  ASSERT_TRUE(user_only.ok());
  EXPECT_EQ(base64_decode(user_only.value()->authorization->expose().substr(6)), "bob:");
}

TEST(HttpsProxy, BadProxyUrlsAreRefusedWithoutTheirCredentials) {
  for (const char* bad :
       {"socks5://u:canary-pw@p:1080", "http://u:canary-pw@p:0", "http://u:canary%zz@p"}) {
    auto p = parse_proxy(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(p.error().message.find("canary"), std::string::npos) << p.error().message;
  }
}

TEST(HttpsProxy, NoProxyMatchesSuffixesStarsAndPorts) {
  const std::string list = "internal.corp, .svc.local,*.example.org , 10.0.0.5, api.test:8443";
  EXPECT_TRUE(no_proxy_matches(list, "internal.corp", 443));
  EXPECT_TRUE(no_proxy_matches(list, "git.internal.corp", 443));
  EXPECT_FALSE(no_proxy_matches(list, "notinternal.corp", 443));  // a suffix at a dot only
  EXPECT_TRUE(no_proxy_matches(list, "a.b.svc.local", 443));
  EXPECT_TRUE(no_proxy_matches(list, "svc.local", 443));
  EXPECT_TRUE(no_proxy_matches(list, "www.EXAMPLE.org", 443));
  EXPECT_TRUE(no_proxy_matches(list, "10.0.0.5", 443));
  EXPECT_FALSE(no_proxy_matches(list, "110.0.0.5", 443));
  EXPECT_TRUE(no_proxy_matches(list, "api.test", 8443));
  EXPECT_FALSE(no_proxy_matches(list, "api.test", 443));
  EXPECT_FALSE(no_proxy_matches(list, "api.github.com", 443));
  EXPECT_TRUE(no_proxy_matches("*", "api.github.com", 443));
  EXPECT_FALSE(no_proxy_matches("", "api.github.com", 443));
}

TEST(HttpsProxy, LoopbackAndNoProxyHostsGoDirect) {
  auto p = parse_proxy("http://proxy.corp:3128");
  ASSERT_TRUE(p.ok());
  const ProxySettings* proxy = p.value().get();
  EXPECT_TRUE(use_proxy(proxy, "", "api.github.com", 443));
  EXPECT_FALSE(use_proxy(proxy, "", "127.0.0.1", 443));
  EXPECT_FALSE(use_proxy(proxy, "", "localhost", 443));
  EXPECT_FALSE(use_proxy(proxy, "", "::1", 443));
  EXPECT_FALSE(use_proxy(proxy, "github.com", "api.github.com", 443));
  EXPECT_FALSE(use_proxy(nullptr, "", "api.github.com", 443));
}

}  // namespace
}  // namespace orgd::net
