#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

using FakeGithubWebhooks = FakeGithubTest;

TEST(FakeGithubWebhookSignature, MatchesGithubsDocumentedTestVector) {
  EXPECT_EQ(hub_signature_256("It's a Secret to Everybody", "Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
  EXPECT_NE(hub_signature_256("another secret", "Hello, World!"),
            hub_signature_256("It's a Secret to Everybody", "Hello, World!"));
}

TEST_F(FakeGithubWebhooks, AWorkflowRunDeliveryCarriesGithubsHeadersAndTheRun) {
  github->set_run_name("deploy.yml", "deploy ${{ inputs.deploy_id }}");
  call("POST", "/repos/acme/web/actions/workflows/deploy.yml/dispatches",
       json{{"ref", "main"}, {"inputs", {{"deploy_id", "d-9"}}}});
  const auto id = github->runs().at(0).id;
  EXPECT_EQ(github->workflow_run_event(id)["action"], "requested");
  github->complete_run(id, "success");
  json payload = github->workflow_run_event(id);
  EXPECT_EQ(payload["action"], "completed");
  EXPECT_EQ(payload["workflow_run"]["id"], id);
  EXPECT_EQ(payload["workflow_run"]["conclusion"], "success");
  EXPECT_EQ(payload["workflow_run"]["display_title"], "deploy d-9");
  EXPECT_EQ(payload["repository"]["full_name"], "acme/web");
  EXPECT_EQ(payload["repository"]["id"], github->repository_id("acme", "web"));

  auto delivery = webhook_delivery("workflow_run", payload, "hook-secret", "guid-1", 77);
  EXPECT_EQ(delivery.header("x-github-event"), "workflow_run");
  EXPECT_EQ(delivery.header("X-GitHub-Delivery"), "guid-1");
  EXPECT_EQ(delivery.header("X-GitHub-Hook-ID"), "77");
  EXPECT_EQ(delivery.header("X-GitHub-Hook-Installation-Target-Type"), "repository");
  EXPECT_EQ(delivery.header("user-agent").rfind("GitHub-Hookshot/", 0), 0u);
  EXPECT_EQ(delivery.header("x-hub-signature-256"), hub_signature_256("hook-secret", delivery.body));
  EXPECT_EQ(json::parse(delivery.body), payload);
  // A redelivery is the same delivery again.
  auto again = webhook_delivery("workflow_run", payload, "hook-secret", "guid-1", 77);
  EXPECT_EQ(again.body, delivery.body);
  EXPECT_EQ(again.header("x-hub-signature-256"), delivery.header("x-hub-signature-256"));
}

TEST_F(FakeGithubWebhooks, ARepositoryAnswersWithItsId) {
  auto repo = call("GET", "/repos/acme/web");
  ASSERT_EQ(repo.status, 200);
  EXPECT_EQ(body(repo)["id"], github->repository_id("acme", "web"));
  EXPECT_EQ(body(repo)["full_name"], "acme/web");
  EXPECT_NE(body(call("GET", "/repos/acme/api"))["id"], body(repo)["id"]);
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
