#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

using FakeGithubRateLimits = FakeGithubTest;

const std::string kList = "/repos/acme/web/actions/secrets";

TEST_F(FakeGithubRateLimits, EveryAnswerCarriesTheRateLimitHeaders) {
  const auto reset = std::to_string(clock.seconds() + 3600);
  for (const auto& answer :
       {call("GET", kList), call("GET", "/repos/acme/web/nothing-here"),
        github->handle(request("GET", kList, "", "Bearer wrong"))}) {
    EXPECT_EQ(header(answer, "x-ratelimit-limit"), "5000");
    EXPECT_FALSE(header(answer, "x-ratelimit-remaining").empty());
    EXPECT_FALSE(header(answer, "x-ratelimit-used").empty());
    EXPECT_EQ(header(answer, "x-ratelimit-reset"), reset);
    EXPECT_EQ(header(answer, "x-ratelimit-resource"), "core");
  }
  auto missing = call("GET", "/repos/acme/web/nothing-here");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(body(missing)["message"], "Not Found");
}

TEST_F(FakeGithubRateLimits, CallsUseTheLimitAndRateLimitItselfIsFree) {
  auto first = call("GET", kList);
  EXPECT_EQ(header(first, "x-ratelimit-used"), "1");
  EXPECT_EQ(header(first, "x-ratelimit-remaining"), "4999");
  call("GET", kList);
  auto rl = call("GET", "/rate_limit");
  ASSERT_EQ(rl.status, 200);
  EXPECT_EQ(header(rl, "x-ratelimit-used"), "2");
  json b = body(rl);
  EXPECT_EQ(b["resources"]["core"]["limit"], 5000);
  EXPECT_EQ(b["resources"]["core"]["remaining"], 4998);
  EXPECT_EQ(b["resources"]["core"]["used"], 2);
  EXPECT_EQ(b["resources"]["core"]["reset"], clock.seconds() + 3600);
  EXPECT_EQ(b["rate"], b["resources"]["core"]);  // the 2022-11-28 shape

  FakeRequest newer = request("GET", "/rate_limit");
  newer.headers.push_back({"X-GitHub-Api-Version", "2026-03-10"});
  json nb = body(github->handle(newer));
  EXPECT_FALSE(nb.contains("rate"));
  EXPECT_EQ(nb["resources"]["core"]["remaining"], 4998);
  EXPECT_EQ(github->rate_limit_remaining(), 4998);

  FakeRequest unknown = request("GET", kList);
  unknown.headers.push_back({"X-GitHub-Api-Version", "2019-01-01"});
  EXPECT_EQ(github->handle(unknown).status, 400);
}

TEST_F(FakeGithubRateLimits, AnExhaustedPrimaryLimitIs403UntilTheReset) {
  github->exhaust_rate_limit(120s);
  auto refused = call("GET", kList);
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(header(refused, "x-ratelimit-remaining"), "0");
  EXPECT_EQ(header(refused, "x-ratelimit-reset"), std::to_string(clock.seconds() + 120));
  EXPECT_EQ(body(refused)["message"].get<std::string>().rfind("API rate limit exceeded", 0), 0u);
  EXPECT_TRUE(header(refused, "retry-after").empty());
  EXPECT_EQ(call("PUT", kList + "/X", json::object()).status, 403);  // every route

  clock.now += 119s;
  EXPECT_EQ(call("GET", kList).status, 403);
  clock.now += 1s;
  auto after = call("GET", kList);
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(header(after, "x-ratelimit-remaining"), "4999");
}

TEST_F(FakeGithubRateLimits, ASmallLimitRunsOutByItself) {
  FakeGithub::Options options;
  options.clock = clock.fn();
  options.rate_limit = 3;
  FakeGithub small(options);
  small.add_token(kToken);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(small.handle(request("GET", kList)).status, 200);
  auto out = small.handle(request("GET", kList));
  EXPECT_EQ(out.status, 403);
  EXPECT_EQ(header(out, "x-ratelimit-remaining"), "0");
  EXPECT_EQ(header(out, "x-ratelimit-used"), "3");
}

TEST_F(FakeGithubRateLimits, TooManyRequestsCarriesRetryAfter) {
  github->inject(FakeFault::too_many_requests(30s));
  auto limited = call("GET", kList);
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(header(limited, "retry-after"), "30");
  EXPECT_NE(body(limited)["message"].get<std::string>().find("secondary rate limit"),
            std::string::npos);
  EXPECT_EQ(call("GET", kList).status, 200);
}

TEST_F(FakeGithubRateLimits, SecondaryLimitsAre403WithOrWithoutRetryAfter) {
  github->inject(FakeFault::secondary_limit(45s));
  github->inject(FakeFault::secondary_limit(std::nullopt));
  auto with = call("GET", kList);
  EXPECT_EQ(with.status, 403);
  EXPECT_EQ(header(with, "retry-after"), "45");
  EXPECT_NE(header(with, "x-ratelimit-remaining"), "0");  // not the primary limit
  EXPECT_EQ(body(with)["message"].get<std::string>().rfind(
                "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                "try again.",
                0),
            0u);
  EXPECT_NE(body(with)["documentation_url"].get<std::string>().find("secondary-rate-limits"),
            std::string::npos);
  auto without = call("GET", kList);
  EXPECT_EQ(without.status, 403);
  EXPECT_TRUE(header(without, "retry-after").empty());
  EXPECT_EQ(call("GET", kList).status, 200);
}

TEST_F(FakeGithubRateLimits, ABurstOfServerErrorsThenTheRealAnswer) {
  github->inject(FakeFault::server_errors(3, 502));
  for (int i = 0; i < 3; ++i) {
    auto failed = call("GET", kList);
    EXPECT_EQ(failed.status, 502);
    EXPECT_TRUE(body(failed)["message"].is_string());
  }
  EXPECT_EQ(call("GET", kList).status, 200);
  EXPECT_EQ(github->count("GET /repos/{owner}/{repo}/actions/secrets"), 4u);
}

TEST_F(FakeGithubRateLimits, AFaultCanAimAtOneRoute) {
  github->inject(FakeFault::server_errors(1, 503).on(
      "PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}"));
  EXPECT_EQ(call("GET", kList).status, 200);
  EXPECT_EQ(call("GET", kList + "/public-key").status, 200);
  EXPECT_EQ(put_secret(kList, "A", "v").status, 503);
  EXPECT_FALSE(github->secret_value(SecretScope::repository("acme", "web"), "A"));
  EXPECT_EQ(put_secret(kList, "A", "v").status, 201);
}

TEST_F(FakeGithubRateLimits, SlowAndDroppedAnswersAreHandedToTheServer) {
  github->set_delay(50ms);
  EXPECT_EQ(call("GET", kList).delay, 50ms);
  github->inject(FakeFault::slow(2s));
  EXPECT_EQ(call("GET", kList).delay, 2050ms);
  EXPECT_EQ(call("GET", kList).delay, 50ms);
  github->set_delay(0ms);

  // A dropped answer still does the work: the client cannot know whether it happened.
  github->inject(
      FakeFault::dropped().on("PUT /repos/{owner}/{repo}/actions/secrets/{secret_name}"));
  auto dropped = put_secret(kList, "DROPPED", "v");
  EXPECT_TRUE(dropped.drop);
  EXPECT_EQ(github->secret_value(SecretScope::repository("acme", "web"), "DROPPED"), "v");
  EXPECT_FALSE(call("GET", kList).drop);
}

TEST_F(FakeGithubRateLimits, EveryCallIsRecorded) {
  put_secret(kList, "RECORDED", "v");
  call("GET", "/nowhere");
  auto calls = github->calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].route, "GET /repos/{owner}/{repo}/actions/secrets/public-key");
  EXPECT_EQ(calls[1].method, "PUT");
  EXPECT_EQ(calls[1].path, "/repos/acme/web/actions/secrets/RECORDED");
  EXPECT_EQ(calls[1].status, 201);
  EXPECT_EQ(calls[1].header("authorization"), std::string("Bearer ") + kToken);
  EXPECT_EQ(json::parse(calls[1].body)["key_id"],
            github->public_key_id(SecretScope::repository("acme", "web")));
  EXPECT_EQ(calls[2].route, "");
  EXPECT_EQ(calls[2].status, 404);
  github->clear_calls();
  EXPECT_TRUE(github->calls().empty());
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
