// The GitHub App auth and the health probe through orgd's real HTTPS client against the fake
// GitHub on loopback: the fake checks the JWT with the App's public key and mints installation
// tokens; an invalidated token is replaced by a new one the fake also accepts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/core/metrics.hpp"
#include "daemon/net/https_client.hpp"
#include "plugins/github/auth.hpp"
#include "plugins/github/health_probe.hpp"
#include "tests/fakes/fake_github.hpp"

namespace orgd::github {
namespace {

using ::testing::HasSubstr;

TEST(GithubAppFakeTest, JwtAcceptedByTheFakeAndTokensRenewedAfterInvalidate) {
  orgd::testing::FakeGithubServer fake;
  MetricsRegistry metrics;
  const HttpTransportFactory http = make_https_transport_factory(metrics, Environment{});

  Settings settings;
  settings.name = "gh";
  settings.api_url = fake.base_url();
  settings.app = AppSettings{std::to_string(fake.github().app_id()),
                             std::to_string(fake.github().installation_id()),
                             fake.github().app_private_key_file()};
  auto transport = http(http_client_options(settings));
  ASSERT_TRUE(transport) << transport.error().message;
  const SecretSource source{Environment{}};
  auto auth = make_auth(settings, source, transport.value(), std::make_shared<SystemClock>());
  ASSERT_TRUE(auth) << auth.error().message;
  std::shared_ptr<GithubAuth> shared_auth = std::move(auth).value();

  GithubHealthProbe probe(
      settings,
      [&]() -> Result<GithubHealthProbe::Client> {
        return GithubHealthProbe::Client{transport.value(), shared_auth};
      },
      std::make_shared<SystemClock>());
  auto first = probe.probe();
  ASSERT_TRUE(first);
  EXPECT_TRUE(first.value().ok) << first.value().detail;
  EXPECT_TRUE(first.value().rate_limit_remaining.has_value());
  ASSERT_EQ(fake.github().issued_installation_tokens().size(), 1u);

  // A 401 elsewhere invalidates the token: the next call mints a new one, which the fake
  // accepts. (The fake answers /rate_limit without checking the token, so the probe's own 401
  // path is covered against a stub in github_health_probe_test.cpp.)
  shared_auth->invalidate();
  auto renewed = probe.probe();
  ASSERT_TRUE(renewed);
  EXPECT_TRUE(renewed.value().ok) << renewed.value().detail;
  EXPECT_EQ(fake.github().issued_installation_tokens().size(), 2u);
}

TEST(GithubAppFakeTest, AKeyThatIsNotTheAppsIsRefusedPermanently) {
  orgd::testing::FakeGithubServer fake;
  orgd::testing::FakeGithubServer other;  // another App, another key
  MetricsRegistry metrics;
  const HttpTransportFactory http = make_https_transport_factory(metrics, Environment{});
  Settings settings;
  settings.name = "gh";
  settings.api_url = fake.base_url();
  settings.app = AppSettings{std::to_string(fake.github().app_id()),
                             std::to_string(fake.github().installation_id()),
                             other.github().app_private_key_file()};
  auto transport = http(http_client_options(settings));
  ASSERT_TRUE(transport);
  auto auth = make_auth(settings, SecretSource{Environment{}}, transport.value(),
                        std::make_shared<SystemClock>());
  ASSERT_TRUE(auth);
  auto header = auth.value()->authorization();
  ASSERT_FALSE(header);
  EXPECT_EQ(header.error().retry, Retry::permanent);
  EXPECT_THAT(header.error().message, HasSubstr("401"));
}

}  // namespace
}  // namespace orgd::github
