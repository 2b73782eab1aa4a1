#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

using FakeGithubDeployments = FakeGithubTest;

const std::string kDeployments = "/repos/acme/web/deployments";

std::int64_t create(FakeGithubTest& t, json b) {
  auto answer = t.call("POST", kDeployments, b);
  EXPECT_EQ(answer.status, 201) << answer.body;
  return body(answer)["id"].get<std::int64_t>();
}

TEST_F(FakeGithubDeployments, ADeploymentRecordsWhatWasAskedFor) {
  auto answer = call("POST", kDeployments,
                     json{{"ref", "v2.0.0"},
                          {"environment", "staging"},
                          {"auto_merge", false},
                          {"required_contexts", json::array()},
                          {"payload", {{"deploy_id", "d-7"}}},
                          {"description", "orgd deploy d-7"}});
  ASSERT_EQ(answer.status, 201) << answer.body;
  json b = body(answer);
  const auto id = b["id"].get<std::int64_t>();
  EXPECT_EQ(b["ref"], "v2.0.0");
  EXPECT_EQ(b["environment"], "staging");
  EXPECT_EQ(b["task"], "deploy");
  EXPECT_EQ(b["payload"]["deploy_id"], "d-7");
  EXPECT_EQ(b["production_environment"], false);
  EXPECT_EQ(b["statuses_url"],
            "http://api.github.test/repos/acme/web/deployments/" + std::to_string(id) + "/statuses");
  EXPECT_EQ(b["sha"].get<std::string>().size(), 40u);

  auto d = github->deployment(id);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->auto_merge);
  ASSERT_TRUE(d->required_contexts);
  EXPECT_TRUE(d->required_contexts->empty());

  // Defaults as GitHub's: auto_merge true, required_contexts left out, environment production.
  const auto plain = create(*this, json{{"ref", "main"}, {"payload", R"({"x":1})"}});
  auto p = github->deployment(plain);
  EXPECT_TRUE(p->auto_merge);
  EXPECT_FALSE(p->required_contexts);
  EXPECT_EQ(p->environment, "production");
  EXPECT_TRUE(p->production_environment);
  EXPECT_EQ(p->payload["x"], 1);  // a JSON string payload is read as JSON

  EXPECT_EQ(call("POST", kDeployments, json{{"environment", "x"}}).status, 422);
  EXPECT_EQ(body(call("GET", kDeployments + "/" + std::to_string(id)))["ref"], "v2.0.0");
  EXPECT_EQ(call("GET", kDeployments + "/1").status, 404);
  EXPECT_EQ(body(call("GET", kDeployments + "?environment=staging")).size(), 1u);
}

TEST_F(FakeGithubDeployments, PendingChecksBlockADeploymentThatRequiresThem) {
  github->set_pending_contexts("acme", "web", {"build", "CodeRabbit"});
  auto refused = call("POST", kDeployments, json{{"ref", "main"}});
  EXPECT_EQ(refused.status, 409);
  json b = body(refused);
  EXPECT_EQ(b["message"], "Conflict: Commit status checks failed for main.");
  EXPECT_EQ(b["errors"][0]["field"], "required_contexts");
  EXPECT_EQ(b["errors"][0]["contexts"].size(), 2u);
  EXPECT_EQ(call("POST", kDeployments, json{{"ref", "main"}, {"required_contexts", {"build"}}})
                .status,
            409);
  EXPECT_EQ(call("POST", kDeployments, json{{"ref", "main"}, {"required_contexts", {"lint"}}})
                .status,
            201);
  EXPECT_EQ(call("POST", kDeployments, json{{"ref", "main"}, {"required_contexts", json::array()}})
                .status,
            201);
  EXPECT_EQ(github->deployments().size(), 2u);
}

TEST_F(FakeGithubDeployments, StatusesAreCheckedRecordedAndListedNewestFirst) {
  const auto id = create(*this, json{{"ref", "main"}, {"environment", "staging"}});
  const std::string statuses = kDeployments + "/" + std::to_string(id) + "/statuses";
  const std::string run = "https://github.com/acme/web/actions/runs/9100000001";

  auto first = call("POST", statuses, json{{"state", "in_progress"}, {"log_url", run}});
  ASSERT_EQ(first.status, 201) << first.body;
  EXPECT_EQ(body(first)["state"], "in_progress");
  EXPECT_EQ(body(first)["log_url"], run);
  EXPECT_EQ(body(first)["target_url"], run);  // log_url sets the legacy field too

  auto bad_state = call("POST", statuses, json{{"state", "done"}});
  EXPECT_EQ(bad_state.status, 422);
  auto long_text = call("POST", statuses,
                        json{{"state", "success"}, {"description", std::string(141, 'x')}});
  EXPECT_EQ(long_text.status, 422);
  EXPECT_EQ(body(long_text)["message"], "Validation Failed");
  EXPECT_EQ(body(long_text)["errors"][0]["field"], "description");
  EXPECT_EQ(call("POST", statuses,
                 json{{"state", "success"}, {"description", std::string(140, 'x')}})
                .status,
            201);
  EXPECT_EQ(call("POST", kDeployments + "/1/statuses", json{{"state", "success"}}).status, 404);

  auto d = github->deployment(id);
  ASSERT_EQ(d->statuses.size(), 2u);
  EXPECT_EQ(d->statuses[0].state, "in_progress");
  EXPECT_EQ(d->statuses[1].state, "success");

  auto listed = call("GET", statuses + "?per_page=1");
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(body(listed).size(), 1u);
  EXPECT_EQ(body(listed)[0]["state"], "success");
  EXPECT_NE(header(listed, "link").find("page=2>; rel=\"last\""), std::string::npos);
}

TEST_F(FakeGithubDeployments, ASuccessMarksEarlierSuccessesOfTheEnvironmentInactive) {
  const auto older = create(*this, json{{"ref", "v1"}, {"environment", "staging"}});
  call("POST", kDeployments + "/" + std::to_string(older) + "/statuses", json{{"state", "success"}});
  const auto newer = create(*this, json{{"ref", "v2"}, {"environment", "staging"}});
  call("POST", kDeployments + "/" + std::to_string(newer) + "/statuses", json{{"state", "success"}});
  EXPECT_EQ(github->deployment(older)->statuses.back().state, "inactive");
  EXPECT_EQ(github->deployment(newer)->statuses.back().state, "success");

  // Only an inactive deployment may be deleted while there are others.
  EXPECT_EQ(call("DELETE", kDeployments + "/" + std::to_string(newer)).status, 422);
  EXPECT_EQ(call("DELETE", kDeployments + "/" + std::to_string(older)).status, 204);
  EXPECT_FALSE(github->deployment(older));
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
