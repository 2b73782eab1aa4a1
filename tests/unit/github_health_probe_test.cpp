// The github provider's health probe: GET /rate_limit with its credentials, the budget read from
// resources.core, a 401 invalidating the credential, a missing token reported, not thrown.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <string>

#include "daemon/core/config.hpp"
#include "daemon/plugin/registry.hpp"
#include "plugins/github/github_provider.hpp"
#include "plugins/github/health_probe.hpp"

namespace orgd::github {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ScriptedTransport final : public HttpTransport {
 public:
  Result<HttpResponse> send(HttpRequest request) override {
    urls.push_back(request.url);
    authorizations.push_back(request.authorization ? std::string(request.authorization->expose())
                                                   : "");
    HttpResponse r;
    r.status = status;
    r.body = body;
    r.headers = headers;
    return r;
  }
  int status = 200;
  std::string body;
  std::vector<HttpHeader> headers;
  std::vector<std::string> urls, authorizations;
};

class CountingAuth final : public GithubAuth {
 public:
  Result<std::shared_ptr<const Secret>> authorization() override {
    return std::make_shared<const Secret>(Secret::from("Bearer ghs_probe"));
  }
  void invalidate() override { ++invalidated; }
  int invalidated = 0;
};

class GithubHealthProbeTest : public ::testing::Test {
 protected:
  GithubHealthProbeTest() {
    settings.name = "gh";
    settings.api_url = "https://api.example.test";
  }
  GithubHealthProbe make() {
    return GithubHealthProbe(
        settings,
        [this]() -> Result<GithubHealthProbe::Client> {
          ++clients_made;
          return GithubHealthProbe::Client{transport, auth};
        },
        std::make_shared<ManualClock>());
  }
  Settings settings;
  std::shared_ptr<ScriptedTransport> transport = std::make_shared<ScriptedTransport>();
  std::shared_ptr<CountingAuth> auth = std::make_shared<CountingAuth>();
  int clients_made = 0;
};

TEST_F(GithubHealthProbeTest, ReadsTheCoreBudget) {
  // The 2026-03-10 form: no top-level `rate`, only resources.core.
  transport->body =
      R"({"resources":{"core":{"limit":5000,"used":1,"remaining":4999,"reset":1700003600}}})";
  auto probe = make();
  auto result = probe.probe();
  ASSERT_TRUE(result);
  EXPECT_TRUE(result.value().ok) << result.value().detail;
  EXPECT_EQ(result.value().rate_limit_limit, 5000);
  EXPECT_EQ(result.value().rate_limit_remaining, 4999);
  ASSERT_TRUE(result.value().rate_limit_reset);
  EXPECT_EQ(result.value().rate_limit_reset->time_since_epoch(), std::chrono::seconds{1700003600});
  EXPECT_THAT(result.value().detail, HasSubstr("4999/5000"));
  ASSERT_EQ(transport->urls.size(), 1u);
  EXPECT_EQ(transport->urls[0], "https://api.example.test/rate_limit");
  EXPECT_EQ(transport->authorizations[0], "Bearer ghs_probe");
  EXPECT_THAT(result.value().detail, Not(HasSubstr("ghs_probe")));
  // The client is made once.
  ASSERT_TRUE(probe.probe());
  EXPECT_EQ(clients_made, 1);
}

TEST_F(GithubHealthProbeTest, BadCredentialsAreReportedAndInvalidated) {
  transport->status = 401;
  transport->body = R"({"message":"Bad credentials"})";
  auto probe = make();
  auto result = probe.probe();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result.value().ok);
  EXPECT_THAT(result.value().detail, HasSubstr("401: Bad credentials"));
  EXPECT_EQ(result.value().last_error, result.value().detail);
  EXPECT_EQ(auth->invalidated, 1);

  transport->status = 403;
  transport->body = R"({"message":"API rate limit exceeded"})";
  transport->headers = {{"x-ratelimit-remaining", "0"}};
  result = probe.probe();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result.value().ok);
  EXPECT_EQ(result.value().rate_limit_remaining, 0);
  EXPECT_EQ(auth->invalidated, 1);

  transport->status = 200;
  transport->headers.clear();
  transport->body = R"({"rate":{"limit":5000}})";  // no resources.core
  result = probe.probe();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result.value().ok);
  EXPECT_THAT(result.value().detail, HasSubstr("resources.core"));
}

TEST(GithubProviderProbeTest, AMissingTokenIsTheProbesFindingNotAStartFailure) {
  const std::string yaml =
      "org: acme\nproviders:\n  gh: {type: github, token_env: GH_TOKEN_NOT_SET}\n";
  const Config config = load_config_string(yaml, "orgd.yaml", Environment());
  auto transport = std::make_shared<ScriptedTransport>();
  ProviderEnvironment env;
  env.http =
      [transport](const HttpClientOptions& options) -> Result<std::shared_ptr<HttpTransport>> {
    EXPECT_EQ(options.provider, "gh");
    EXPECT_EQ(options.rate_limit_headers, RateLimitHeaders::github);
    return std::shared_ptr<HttpTransport>(transport);
  };
  auto provider = ProviderRegistry{}.create(config.providers.at("gh"), env, "orgd.yaml");
  ASSERT_TRUE(provider);
  EXPECT_TRUE(provider->capabilities().health_probe);
  ASSERT_NE(provider->health_probe(), nullptr);
  auto result = provider->health_probe()->probe();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result.value().ok);
  EXPECT_THAT(result.value().detail, HasSubstr("GH_TOKEN_NOT_SET"));
  EXPECT_TRUE(transport->urls.empty());

  // Without an HTTP client offered (check-config), the probe says so.
  auto offline =
      ProviderRegistry{}.create(config.providers.at("gh"), ProviderEnvironment{}, "orgd.yaml");
  auto none = offline->health_probe()->probe();
  ASSERT_TRUE(none);
  EXPECT_FALSE(none.value().ok);
  EXPECT_THAT(none.value().detail, HasSubstr("makes no HTTP calls"));
}

}  // namespace
}  // namespace orgd::github
