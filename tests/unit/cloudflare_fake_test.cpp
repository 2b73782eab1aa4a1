// The fake Cloudflare API behaves as the real one where orgd depends on it: the bearer token,
// the envelope and its codes, version uploads checked, deployments' percentages, 10220 across
// changed secrets, secret edits refused while the latest version is not deployed, the rate
// limit's 429 and block, and Containers rollouts moving on as they are read.
#include "tests/fakes/fake_cloudflare.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "daemon/core/clock.hpp"

namespace orgd::testing {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr const char* kToken = "fake-cf-token";

class FakeCloudflareTest : public ::testing::Test {
 protected:
  FakeCloudflareTest() {
    cf_.add_token(kToken);
    cf_.add_worker("web", {{"API_KEY", "one"}});
  }

  FakeResponse call(const std::string& method, const std::string& path, const std::string& body = {},
                    const std::string& content_type = "application/json",
                    const std::string& token = kToken) {
    FakeRequest r;
    r.method = method;
    const auto q = path.find('?');
    r.path = "/client/v4" + path.substr(0, q);
    r.query = q == std::string::npos ? "" : path.substr(q + 1);
    r.target = r.path + (r.query.empty() ? "" : "?" + r.query);
    r.headers = {{"Authorization", "Bearer " + token}, {"Content-Type", content_type}};
    r.body = body;
    return cf_.handle(r);
  }
  json body(const FakeResponse& r) { return json::parse(r.body); }
  std::string script(const std::string& rest = "") {
    return "/accounts/" + cf_.account_id() + "/workers/scripts/web" + rest;
  }
  std::string upload() {
    const std::string boundary = "b0undary";
    const std::string form =
        "--b0undary\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: "
        "application/json\r\n\r\n{\"main_module\":\"index.js\",\"keep_bindings\":[\"secret_text\"],"
        "\"annotations\":{\"workers/message\":\"orgd deploy d1 attempt 1: web\"}}\r\n"
        "--b0undary\r\nContent-Disposition: form-data; name=\"index.js\"; filename=\"index.js\"\r\n"
        "Content-Type: application/javascript+module\r\n\r\nexport default {}\r\n--b0undary--\r\n";
    const auto r = call("POST", script("/versions"), form, "multipart/form-data; boundary=" + boundary);
    EXPECT_EQ(r.status, 200) << r.body;
    return body(r)["result"]["id"];
  }
  std::string live_version() {
    return cf_.worker("web")->versions.front().id;
  }
  json deployment(const std::string& a, int pa, const std::string& b = {}, int pb = 0) {
    json versions = json::array({{{"version_id", a}, {"percentage", pa}}});
    if (!b.empty()) versions.push_back({{"version_id", b}, {"percentage", pb}});
    return {{"strategy", "percentage"}, {"versions", versions}};
  }

  ManualClock clock_{std::chrono::system_clock::now()};
  FakeCloudflare cf_{FakeCloudflare::Options{[this] { return clock_.now(); }}};
};

TEST_F(FakeCloudflareTest, AWrongTokenIsRefusedWithCode10000AndRateLimitHeaders) {
  const auto r = call("GET", script("/deployments"), {}, "application/json", "wrong");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(body(r)["success"], false);
  EXPECT_EQ(body(r)["errors"][0]["code"], 10000);
  bool has_ratelimit = false;
  for (const auto& h : r.headers) has_ratelimit = has_ratelimit || h.name == "Ratelimit";
  EXPECT_TRUE(has_ratelimit);
}

TEST_F(FakeCloudflareTest, TokensVerifyOnlyAtTheirOwnEndpoint) {
  cf_.add_token("acct", /*account=*/true, "active", "2027-01-01T00:00:00Z");
  EXPECT_EQ(call("GET", "/user/tokens/verify").status, 200);
  EXPECT_EQ(call("GET", "/accounts/" + cf_.account_id() + "/tokens/verify").status, 401);
  const auto account = call("GET", "/accounts/" + cf_.account_id() + "/tokens/verify", {}, "", "acct");
  ASSERT_EQ(account.status, 200);
  EXPECT_EQ(body(account)["result"]["status"], "active");
  EXPECT_EQ(body(account)["result"]["expires_on"], "2027-01-01T00:00:00Z");
  EXPECT_EQ(call("GET", "/user/tokens/verify", {}, "", "acct").status, 401);
}

TEST_F(FakeCloudflareTest, UploadsAreCheckedPartByPart) {
  const std::string id = upload();
  const auto worker = cf_.worker("web");
  ASSERT_EQ(worker->versions.size(), 2u);
  EXPECT_EQ(worker->versions.back().id, id);
  EXPECT_EQ(worker->versions.back().secrets.at("API_KEY"), "one") << "keep_bindings kept the secret";
  EXPECT_EQ(worker->versions.back().modules.at(0).body, "export default {}");
  const auto wrong_first = call("POST", script("/versions"),
                                "--b\r\nContent-Disposition: form-data; name=\"index.js\"\r\nContent-Type: "
                                "application/javascript+module\r\n\r\nx\r\n--b--\r\n",
                                "multipart/form-data; boundary=b");
  EXPECT_EQ(wrong_first.status, 400);
  EXPECT_THAT(wrong_first.body, HasSubstr("the first part must be metadata"));
  const auto no_main = call("POST", script("/versions"),
                            "--b\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: "
                            "application/json\r\n\r\n{\"main_module\":\"main.js\"}\r\n--b--\r\n",
                            "multipart/form-data; boundary=b");
  EXPECT_THAT(no_main.body, HasSubstr("main_module main.js is not a part"));
  EXPECT_EQ(call("POST", script("/versions"), "{}", "application/json").status, 400);
  EXPECT_EQ(call("GET", "/accounts/" + cf_.account_id() + "/workers/scripts/nope/deployments").status, 404);
}

TEST_F(FakeCloudflareTest, DeploymentsMustSumTo100AndTheLatestComesFirst) {
  const std::string old_version = live_version();
  const std::string id = upload();
  EXPECT_EQ(call("POST", script("/deployments"), deployment(id, 10, old_version, 80).dump()).status, 400);
  ASSERT_EQ(call("POST", script("/deployments"), deployment(id, 10, old_version, 90).dump()).status, 200);
  const auto list = body(call("GET", script("/deployments")))["result"]["deployments"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["versions"][0]["version_id"], id);
  EXPECT_EQ(list[0]["versions"][0]["percentage"], 10);
}

TEST_F(FakeCloudflareTest, SecretEditsAreRefusedWhileTheLatestVersionIsNotFullyDeployed) {
  const std::string old_version = live_version();
  const std::string id = upload();
  const std::string put = json{{"name", "NEW"}, {"text", "v"}, {"type", "secret_text"}}.dump();
  const auto refused = call("PUT", script("/secrets"), put);
  EXPECT_EQ(refused.status, 400);
  EXPECT_THAT(refused.body, HasSubstr("isn't currently deployed"));
  ASSERT_EQ(call("POST", script("/deployments"), deployment(id, 10, old_version, 90).dump()).status, 200);
  EXPECT_EQ(call("PUT", script("/secrets"), put).status, 400) << "a split is not fully deployed";
  ASSERT_EQ(call("POST", script("/deployments"), deployment(id, 100).dump()).status, 200);
  ASSERT_EQ(call("PUT", script("/secrets"), put).status, 200);
  const auto worker = cf_.worker("web");
  EXPECT_EQ(worker->versions.back().source, "secret") << "a secret change makes a version";
  EXPECT_EQ(worker->deployments.back().versions.at(0).first, worker->versions.back().id)
      << "and deploys it at 100%";
  EXPECT_EQ(cf_.secrets("web").at("NEW"), "v");
  const auto listed = body(call("GET", script("/secrets")))["result"];
  EXPECT_EQ(listed.size(), 2u);
  EXPECT_FALSE(listed[0].contains("text")) << "no values listed";
}

TEST_F(FakeCloudflareTest, RollingBackAcrossAChangedSecretNeeds10220Force) {
  const std::string old_version = live_version();
  const std::string put = json{{"name", "API_KEY"}, {"text", "two"}, {"type", "secret_text"}}.dump();
  ASSERT_EQ(call("PUT", script("/secrets"), put).status, 200);
  const auto refused = call("POST", script("/deployments"), deployment(old_version, 100).dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(body(refused)["errors"][0]["code"], 10220);
  EXPECT_THAT(refused.body, HasSubstr("The following secrets have changed: API_KEY"));
  const auto forced = call("POST", script("/deployments?force=true"), deployment(old_version, 100).dump());
  EXPECT_EQ(forced.status, 200);
  EXPECT_TRUE(cf_.worker("web")->deployments.back().forced);
}

TEST_F(FakeCloudflareTest, OverTheBudgetIsA429ThatBlocksEveryCallForTheBlockTime) {
  cf_.set_rate_limit_remaining(1);
  EXPECT_EQ(call("GET", script("/deployments")).status, 200);
  const auto limited = call("GET", script("/deployments"));
  ASSERT_EQ(limited.status, 429);
  EXPECT_EQ(body(limited)["success"], false);
  std::string retry_after;
  for (const auto& h : limited.headers) {
    if (h.name == "Retry-After") retry_after = h.value;
  }
  EXPECT_EQ(retry_after, "300");
  clock_.advance(std::chrono::seconds{299});
  EXPECT_EQ(call("GET", script("/deployments")).status, 429) << "still blocked";
  clock_.advance(std::chrono::seconds{2});
  EXPECT_EQ(call("GET", script("/deployments")).status, 200) << "a new window after the block";
}

TEST_F(FakeCloudflareTest, SuccessFalseAtHttp200OnDemand) {
  cf_.fail_with_success_false(1, "GET /accounts/{account_id}/workers/scripts/{script_name}/deployments");
  const auto r = call("GET", script("/deployments"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(body(r)["success"], false);
  EXPECT_EQ(body(call("GET", script("/deployments")))["success"], true);
}

TEST_F(FakeCloudflareTest, RolloutsProgressAsTheyAreReadAndEndCompletedOrReverted) {
  cf_.add_application("app1", "web:v1");
  const std::string base = "/accounts/" + cf_.account_id() + "/containers/applications/app1/rollouts";
  const json rollout = {{"description", "d"}, {"strategy", "rolling"}, {"step_percentage", 25},
                        {"kind", "full_auto"}, {"target_configuration", {{"image", "web:v2"}}}};
  EXPECT_EQ(call("POST", base, json{{"description", "d"}, {"strategy", "rolling"}, {"step_percentage", 30},
                                    {"target_configuration", {{"image", "x"}}}}.dump()).status, 400);
  const auto created = call("POST", base, rollout.dump());
  ASSERT_EQ(created.status, 201);
  const std::string id = body(created)["result"]["id"];
  EXPECT_EQ(body(call("GET", base + "/" + id))["result"]["status"], "progressing");
  EXPECT_EQ(body(call("GET", base + "/" + id))["result"]["status"], "completed");
  EXPECT_EQ(cf_.application("app1")->image, "web:v2");

  cf_.set_rollouts_revert(true);
  json back = rollout;
  back["target_configuration"]["image"] = "web:v3";
  const std::string second = body(call("POST", base, back.dump()))["result"]["id"];
  call("GET", base + "/" + second);
  EXPECT_EQ(body(call("GET", base + "/" + second))["result"]["status"], "reverted");
  EXPECT_EQ(cf_.application("app1")->image, "web:v2");
}

}  // namespace
}  // namespace orgd::testing
