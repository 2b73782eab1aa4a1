#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

using FakeGithubActions = FakeGithubTest;

const std::string kDispatch = "/repos/acme/web/actions/workflows/deploy.yml/dispatches";
const std::string kRuns = "/repos/acme/web/actions/runs";

TEST_F(FakeGithubActions, ADispatchWithRunDetailsAnswersWithTheRun) {
  github->set_run_name("deploy.yml", "deploy ${{ inputs.deploy_id }} to ${{inputs.env}}");
  auto answer = call("POST", kDispatch,
                     json{{"ref", "v1.2.0"},
                          {"inputs", {{"deploy_id", "d-42"}, {"env", "prod"}}},
                          {"return_run_details", true}});
  ASSERT_EQ(answer.status, 200) << answer.body;
  json b = body(answer);
  const auto id = b["workflow_run_id"].get<std::int64_t>();
  EXPECT_EQ(b["run_url"], "http://api.github.test/repos/acme/web/actions/runs/" + std::to_string(id));
  EXPECT_EQ(b["html_url"], "https://github.com/acme/web/actions/runs/" + std::to_string(id));

  auto run = github->run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->ref, "v1.2.0");
  EXPECT_EQ(run->inputs["deploy_id"], "d-42");
  EXPECT_EQ(run->display_title, "deploy d-42 to prod");
  EXPECT_EQ(run->event, "workflow_dispatch");

  auto listed = call("GET", kRuns + "?event=workflow_dispatch");
  ASSERT_EQ(listed.status, 200);
  json lb = body(listed);
  EXPECT_EQ(lb["total_count"], 1);
  json r = lb["workflow_runs"][0];
  EXPECT_EQ(r["id"], id);
  EXPECT_EQ(r["name"], "deploy");
  EXPECT_EQ(r["display_title"], "deploy d-42 to prod");
  EXPECT_EQ(r["event"], "workflow_dispatch");
  EXPECT_EQ(r["head_branch"], "v1.2.0");
  EXPECT_EQ(r["created_at"], "2026-11-30T00:53:20Z");
  EXPECT_TRUE(r["conclusion"].is_null());
  EXPECT_EQ(r["html_url"], b["html_url"]);
}

TEST_F(FakeGithubActions, ADispatchWithoutRunDetailsIs204) {
  auto answer = call("POST", kDispatch, json{{"ref", "main"}});
  EXPECT_EQ(answer.status, 204);
  EXPECT_TRUE(answer.body.empty());
  EXPECT_EQ(call("POST", kDispatch, json{{"ref", "main"}, {"return_run_details", false}}).status,
            204);
  ASSERT_EQ(github->runs().size(), 2u);
  EXPECT_EQ(github->runs()[0].display_title, "deploy");  // no run-name: the workflow's name

  // 2026-03-10 answers with the run without being asked.
  FakeRequest newer = request("POST", kDispatch, json{{"ref", "main"}}.dump());
  newer.headers.push_back({"X-GitHub-Api-Version", "2026-03-10"});
  auto answered = github->handle(newer);
  EXPECT_EQ(answered.status, 200);
  EXPECT_TRUE(body(answered).contains("workflow_run_id"));
}

TEST_F(FakeGithubActions, DispatchBodiesAreCheckedAsGithubDoes) {
  EXPECT_EQ(call("POST", kDispatch, json{{"inputs", json::object()}}).status, 422);
  json inputs = json::object();
  for (int i = 0; i < 25; ++i) inputs["in" + std::to_string(i)] = "v";
  EXPECT_EQ(call("POST", kDispatch, json{{"ref", "main"}, {"inputs", inputs}}).status, 204);
  inputs["one_more"] = "v";
  auto too_many = call("POST", kDispatch, json{{"ref", "main"}, {"inputs", inputs}});
  EXPECT_EQ(too_many.status, 422);
  EXPECT_NE(body(too_many)["message"].get<std::string>().find("25"), std::string::npos);
  EXPECT_EQ(call("POST", kDispatch, std::string("{")).status, 400);
  EXPECT_EQ(github->runs().size(), 1u);
}

TEST_F(FakeGithubActions, OlderServersRefuseReturnRunDetails) {
  github->set_return_run_details_supported(false);
  auto refused = call("POST", kDispatch, json{{"ref", "main"}, {"return_run_details", true}});
  EXPECT_EQ(refused.status, 422);
  EXPECT_EQ(body(refused)["message"],
            "Invalid request.\n\n\"return_run_details\" is not a permitted key.");
  EXPECT_TRUE(github->runs().empty());
  EXPECT_EQ(call("POST", kDispatch, json{{"ref", "main"}}).status, 204);
  EXPECT_EQ(github->runs().size(), 1u);
}

TEST_F(FakeGithubActions, RunsAreFilteredByEventStatusAndCreated) {
  const auto t0 = clock.now;
  call("POST", kDispatch, json{{"ref", "main"}});
  clock.now += 10min;
  call("POST", kDispatch, json{{"ref", "main"}});
  FakeRun push;
  push.owner = "acme";
  push.repo = "web";
  push.workflow = "ci.yml";
  push.event = "push";
  push.status = "completed";
  push.conclusion = "success";
  github->add_run(push);
  FakeRun elsewhere = push;
  elsewhere.repo = "api";
  github->add_run(elsewhere);

  EXPECT_EQ(body(call("GET", kRuns))["total_count"], 3);
  EXPECT_EQ(body(call("GET", kRuns + "?event=workflow_dispatch"))["total_count"], 2);
  EXPECT_EQ(body(call("GET", kRuns + "?event=push"))["total_count"], 1);
  EXPECT_EQ(body(call("GET", kRuns + "?status=success"))["total_count"], 1);

  const std::string after = iso8601_for_test(t0 + 5min);
  auto recent = body(call("GET", kRuns + "?event=workflow_dispatch&created=%3E%3D" + after));
  EXPECT_EQ(recent["total_count"], 1);
  EXPECT_EQ(recent["workflow_runs"][0]["created_at"], iso8601_for_test(t0 + 10min));
  EXPECT_EQ(body(call("GET", kRuns + "?created=>=" + iso8601_for_test(t0)))["total_count"], 3);
  EXPECT_EQ(body(call("GET", kRuns + "?created=<" + after))["total_count"], 1);
  EXPECT_EQ(call("GET", kRuns + "?created=>=yesterday").status, 422);

  // Newest first, per workflow too.
  auto by_workflow = body(call("GET", "/repos/acme/web/actions/workflows/deploy.yml/runs"));
  ASSERT_EQ(by_workflow["total_count"], 2);
  EXPECT_GT(by_workflow["workflow_runs"][0]["id"], by_workflow["workflow_runs"][1]["id"]);
}

TEST_F(FakeGithubActions, RunListsArePaginated) {
  for (int i = 0; i < 7; ++i) call("POST", kDispatch, json{{"ref", "main"}});
  auto page = call("GET", kRuns + "?per_page=3&page=3");
  EXPECT_EQ(body(page)["total_count"], 7);
  EXPECT_EQ(body(page)["workflow_runs"].size(), 1u);
  EXPECT_NE(header(page, "link").find("per_page=3&page=2>; rel=\"prev\""), std::string::npos);
  // Other parameters stay in the links as they were sent, still percent-encoded.
  const std::string created = "created=%3E%3D" + iso8601_for_test(clock.now - 1min);
  auto filtered = call("GET", kRuns + "?page=1&" + created + "&per_page=5");
  EXPECT_EQ(body(filtered)["workflow_runs"].size(), 5u);
  EXPECT_EQ(header(filtered, "link"),
            "<http://api.github.test" + kRuns + "?" + created + "&per_page=5&page=2>; rel=\"next\", "
            "<http://api.github.test" + kRuns + "?" + created + "&per_page=5&page=2>; rel=\"last\"");
}

TEST_F(FakeGithubActions, RunsCompleteAfterTheConfiguredPolls) {
  github->complete_runs_after_polls(3, "failure");
  const auto id =
      body(call("POST", kDispatch, json{{"ref", "main"}, {"return_run_details", true}}))
          ["workflow_run_id"]
              .get<std::int64_t>();
  const std::string url = kRuns + "/" + std::to_string(id);
  EXPECT_EQ(body(call("GET", url))["status"], "in_progress");
  EXPECT_EQ(body(call("GET", kRuns))["workflow_runs"][0]["status"], "in_progress");  // a list reads it too
  json done = body(call("GET", url));
  EXPECT_EQ(done["status"], "completed");
  EXPECT_EQ(done["conclusion"], "failure");
  EXPECT_EQ(github->run(id)->polls, 3);
  EXPECT_EQ(call("GET", kRuns + "/12345").status, 404);
  EXPECT_EQ(call("GET", "/repos/acme/api/actions/runs/" + std::to_string(id)).status, 404);
}

TEST_F(FakeGithubActions, ATestCompletesARunAndCancelIsRefusedAfterwards) {
  call("POST", kDispatch, json{{"ref", "main"}});
  call("POST", kDispatch, json{{"ref", "main"}});
  const auto first = github->runs()[0].id, second = github->runs()[1].id;
  github->complete_run(first, "success");
  EXPECT_EQ(body(call("GET", kRuns + "/" + std::to_string(first)))["conclusion"], "success");
  auto refused = call("POST", kRuns + "/" + std::to_string(first) + "/cancel");
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(body(refused)["message"], "Cannot cancel a workflow run that is completed.");

  EXPECT_EQ(call("POST", kRuns + "/" + std::to_string(second) + "/cancel").status, 202);
  EXPECT_EQ(github->run(second)->status, "completed");
  EXPECT_EQ(github->run(second)->conclusion, "cancelled");
  EXPECT_EQ(call("POST", kRuns + "/999/cancel").status, 404);
}

TEST_F(FakeGithubActions, ANewRunCanShowUpInListsOnlyLater) {
  github->set_new_runs_hidden_for_lists(2);
  call("POST", kDispatch, json{{"ref", "main"}});
  const auto id = github->runs().at(0).id;
  EXPECT_EQ(body(call("GET", kRuns))["total_count"], 0);
  EXPECT_EQ(body(call("GET", kRuns + "?event=workflow_dispatch"))["total_count"], 0);
  EXPECT_EQ(call("GET", kRuns + "/" + std::to_string(id)).status, 200);
  EXPECT_EQ(body(call("GET", kRuns))["total_count"], 1);
}

TEST_F(FakeGithubActions, KnownWorkflowsAndRefsWhenTheTestSaysSo) {
  github->set_workflows("acme", "web", {"deploy.yml"});
  github->set_refs("acme", "web", {"main", "v1.0.0"});
  EXPECT_EQ(call("POST", kDispatch, json{{"ref", "v1.0.0"}}).status, 204);
  EXPECT_EQ(call("POST", "/repos/acme/web/actions/workflows/other.yml/dispatches",
                 json{{"ref", "main"}})
                .status,
            404);
  auto no_ref = call("POST", kDispatch, json{{"ref", "v9"}});
  EXPECT_EQ(no_ref.status, 422);
  EXPECT_EQ(body(no_ref)["message"], "No ref found for: v9");
  // Other repositories are not limited.
  EXPECT_EQ(call("POST", "/repos/acme/api/actions/workflows/any.yml/dispatches",
                 json{{"ref", "v9"}})
                .status,
            204);
  EXPECT_EQ(github->runs().size(), 2u);
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
