#include "daemon/core/secret.hpp"
#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

const std::string kRepo = "/repos/acme/web/actions/secrets";
const std::string kEnv = "/repos/acme/web/environments/production/secrets";
const std::string kOrg = "/orgs/acme/actions/secrets";

using FakeGithubSecrets = FakeGithubTest;

TEST_F(FakeGithubSecrets, ASealedBoxMadeWithLibsodiumOpensAndIsStored) {
  auto key = call("GET", kRepo + "/public-key");
  ASSERT_EQ(key.status, 200);
  json k = body(key);
  const std::string raw = unb64(k["key"].get<std::string>());
  ASSERT_EQ(raw.size(), crypto_box_PUBLICKEYBYTES);
  EXPECT_EQ(k["key_id"], github->public_key_id(SecretScope::repository("acme", "web")));

  auto put = call("PUT", kRepo + "/db_password",
                  json{{"encrypted_value", seal(raw, "hunter2")}, {"key_id", k["key_id"]}});
  EXPECT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(github->secret_value(SecretScope::repository("acme", "web"), "DB_PASSWORD"),
            "hunter2");

  // The same name again is an update: 204 and no body.
  auto again = put_secret(kRepo, "DB_PASSWORD", "hunter3");
  EXPECT_EQ(again.status, 204);
  EXPECT_TRUE(again.body.empty());
  EXPECT_EQ(github->secret_value(SecretScope::repository("acme", "web"), "db_password"),
            "hunter3");

  auto one = call("GET", kRepo + "/db_password");
  ASSERT_EQ(one.status, 200);
  EXPECT_EQ(body(one)["name"], "DB_PASSWORD");  // stored upper-cased
  EXPECT_TRUE(body(one).contains("created_at"));
  EXPECT_FALSE(body(one).contains("value"));

  EXPECT_EQ(call("DELETE", kRepo + "/DB_PASSWORD").status, 204);
  EXPECT_EQ(call("DELETE", kRepo + "/DB_PASSWORD").status, 404);
  EXPECT_EQ(call("GET", kRepo + "/DB_PASSWORD").status, 404);
  EXPECT_FALSE(github->secret_value(SecretScope::repository("acme", "web"), "DB_PASSWORD"));
}

TEST_F(FakeGithubSecrets, OrgdsOwnSealingHelperIsUnderstood) {
  json k = body(call("GET", kRepo + "/public-key"));
  auto sealed = seal_to(unb64(k["key"].get<std::string>()), Secret::from("from-orgd"));
  ASSERT_TRUE(sealed.ok());
  auto put = call("PUT", kRepo + "/FROM_ORGD",
                  json{{"encrypted_value", b64(sealed.value())}, {"key_id", k["key_id"]}});
  EXPECT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(github->secret_value(SecretScope::repository("acme", "web"), "FROM_ORGD"),
            "from-orgd");
}

TEST_F(FakeGithubSecrets, ABoxThatDoesNotOpenIsRefusedWith422) {
  json k = body(call("GET", kRepo + "/public-key"));
  unsigned char other_pk[crypto_box_PUBLICKEYBYTES], other_sk[crypto_box_SECRETKEYBYTES];
  crypto_box_keypair(other_pk, other_sk);
  const std::string wrong_key(reinterpret_cast<char*>(other_pk), sizeof other_pk);

  auto sealed_elsewhere = call(
      "PUT", kRepo + "/X", json{{"encrypted_value", seal(wrong_key, "v")}, {"key_id", k["key_id"]}});
  EXPECT_EQ(sealed_elsewhere.status, 422);
  EXPECT_TRUE(body(sealed_elsewhere)["message"].is_string());
  EXPECT_TRUE(body(sealed_elsewhere)["documentation_url"].is_string());

  auto not_base64 =
      call("PUT", kRepo + "/X", json{{"encrypted_value", "%%%not base64"}, {"key_id", k["key_id"]}});
  EXPECT_EQ(not_base64.status, 422);

  // The box opens but was tampered with on the way: it no longer does.
  std::string box = unb64(seal(unb64(k["key"].get<std::string>()), "value"));
  box.back() ^= 1;
  auto tampered =
      call("PUT", kRepo + "/X", json{{"encrypted_value", b64(box)}, {"key_id", k["key_id"]}});
  EXPECT_EQ(tampered.status, 422);
  EXPECT_FALSE(github->secret_value(SecretScope::repository("acme", "web"), "X"));
}

TEST_F(FakeGithubSecrets, AStaleKeyIdAfterRotationIsRefused) {
  json old_key = body(call("GET", kRepo + "/public-key"));
  github->rotate_public_key(SecretScope::repository("acme", "web"));
  json new_key = body(call("GET", kRepo + "/public-key"));
  EXPECT_NE(old_key["key_id"], new_key["key_id"]);
  EXPECT_NE(old_key["key"], new_key["key"]);

  auto stale = call("PUT", kRepo + "/TOKEN",
                    json{{"encrypted_value", seal(unb64(old_key["key"].get<std::string>()), "v")},
                         {"key_id", old_key["key_id"]}});
  EXPECT_EQ(stale.status, 422);
  // A made-up key_id with a box for the current key is refused as well.
  auto made_up = call("PUT", kRepo + "/TOKEN",
                      json{{"encrypted_value", seal(unb64(new_key["key"].get<std::string>()), "v")},
                           {"key_id", "123"}});
  EXPECT_EQ(made_up.status, 422);
  EXPECT_EQ(put_secret(kRepo, "TOKEN", "v").status, 201);
}

TEST_F(FakeGithubSecrets, BadNamesAndBodiesAreRefusedAsGithubDoes) {
  for (const char* name : {"1ABC", "GITHUB_TOKEN", "github_thing", "has%20space", "dash-ed"}) {
    EXPECT_EQ(put_secret(kRepo, name, "v").status, 422) << name;
  }
  EXPECT_EQ(put_secret(kRepo, "_LEADING_UNDERSCORE_9", "v").status, 201);

  auto no_key_id = call("PUT", kRepo + "/A", json{{"encrypted_value", "AAAA"}});
  EXPECT_EQ(no_key_id.status, 422);
  EXPECT_EQ(body(no_key_id)["message"], "Invalid request.\n\n\"key_id\" wasn't supplied.");
  EXPECT_EQ(call("PUT", kRepo + "/A", std::string("{not json")).status, 400);
  EXPECT_EQ(put_secret(kRepo, "BIG", std::string(48 * 1024 + 1, 'x')).status, 422);
  EXPECT_EQ(put_secret(kRepo, "JUST_FITS", std::string(48 * 1024, 'x')).status, 201);
}

TEST_F(FakeGithubSecrets, ARepositoryHoldsAtMostOneHundredSecrets) {
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(put_secret(kRepo, "S" + std::to_string(i), "v").status, 201) << i;
  }
  EXPECT_EQ(put_secret(kRepo, "ONE_TOO_MANY", "v").status, 422);
  EXPECT_EQ(put_secret(kRepo, "S7", "updated").status, 204);  // updates still allowed
}

TEST_F(FakeGithubSecrets, ListsArePaginatedWithLinkHeaders) {
  for (int i = 0; i < 65; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "SECRET_%03d", i);
    ASSERT_EQ(put_secret(kRepo, name, "v").status, 201);
  }
  auto first = call("GET", kRepo);  // default 30 a page
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(body(first)["total_count"], 65);
  ASSERT_EQ(body(first)["secrets"].size(), 30u);
  EXPECT_EQ(body(first)["secrets"][0]["name"], "SECRET_000");
  EXPECT_EQ(header(first, "link"),
            "<http://api.github.test/repos/acme/web/actions/secrets?page=2>; rel=\"next\", "
            "<http://api.github.test/repos/acme/web/actions/secrets?page=3>; rel=\"last\"");

  auto middle = call("GET", kRepo + "?per_page=20&page=2");
  ASSERT_EQ(body(middle)["secrets"].size(), 20u);
  EXPECT_EQ(body(middle)["secrets"][0]["name"], "SECRET_020");
  const std::string link = header(middle, "link");
  EXPECT_NE(link.find("per_page=20&page=1>; rel=\"prev\""), std::string::npos) << link;
  EXPECT_NE(link.find("per_page=20&page=3>; rel=\"next\""), std::string::npos) << link;
  EXPECT_NE(link.find("per_page=20&page=4>; rel=\"last\""), std::string::npos) << link;
  EXPECT_NE(link.find("per_page=20&page=1>; rel=\"first\""), std::string::npos) << link;

  auto last = call("GET", kRepo + "?per_page=20&page=4");
  EXPECT_EQ(body(last)["secrets"].size(), 5u);
  EXPECT_EQ(header(last, "link").find("rel=\"next\""), std::string::npos);
  auto past = call("GET", kRepo + "?per_page=20&page=9");
  EXPECT_EQ(body(past)["secrets"].size(), 0u);
  EXPECT_EQ(body(past)["total_count"], 65);

  auto everything = call("GET", kRepo + "?per_page=100");
  EXPECT_EQ(body(everything)["secrets"].size(), 65u);
  EXPECT_TRUE(header(everything, "link").empty());
}

TEST_F(FakeGithubSecrets, PerPageIsCappedAtOneHundred) {
  for (int i = 0; i < 150; ++i) {
    ASSERT_EQ(put_secret(kOrg, "ORG_" + std::to_string(i), "v", json{{"visibility", "all"}}).status,
              201);
  }
  auto page = call("GET", kOrg + "?per_page=500");
  EXPECT_EQ(body(page)["secrets"].size(), 100u);
  EXPECT_EQ(body(page)["total_count"], 150);
  EXPECT_NE(header(page, "link").find("per_page=500&page=2>; rel=\"next\""), std::string::npos);
}

TEST_F(FakeGithubSecrets, EnvironmentSecretsHaveTheirOwnKeyAndNames) {
  json repo_key = body(call("GET", kRepo + "/public-key"));
  json env_key = body(call("GET", kEnv + "/public-key"));
  EXPECT_NE(repo_key["key_id"], env_key["key_id"]);
  EXPECT_EQ(put_secret(kEnv, "DEPLOY_KEY", "env-value").status, 201);
  // A box for the repository's key does not open in the environment.
  auto crossed = call(
      "PUT", kEnv + "/OTHER",
      json{{"encrypted_value", seal(unb64(repo_key["key"].get<std::string>()), "v")},
           {"key_id", env_key["key_id"]}});
  EXPECT_EQ(crossed.status, 422);
  EXPECT_EQ(github->secret_value(SecretScope::env("acme", "web", "production"), "DEPLOY_KEY"),
            "env-value");
  EXPECT_FALSE(github->secret_value(SecretScope::repository("acme", "web"), "DEPLOY_KEY"));
  EXPECT_EQ(body(call("GET", kRepo))["total_count"], 0);
  EXPECT_EQ(body(call("GET", kEnv))["total_count"], 1);
}

TEST_F(FakeGithubSecrets, OrganizationSecretsKeepVisibilityAndSelectedRepositories) {
  const auto web = github->repository_id("acme", "web");
  const auto api = github->repository_id("acme", "api");
  EXPECT_NE(web, api);

  EXPECT_EQ(put_secret(kOrg, "NO_VISIBILITY", "v").status, 422);
  EXPECT_EQ(put_secret(kOrg, "BAD", "v", json{{"visibility", "public"}}).status, 422);
  EXPECT_EQ(
      put_secret(kOrg, "IDS_WITHOUT_SELECTED", "v",
                 json{{"visibility", "all"}, {"selected_repository_ids", json::array({web})}})
          .status,
      422);

  auto put = put_secret(kOrg, "SHARED", "org-value",
                        json{{"visibility", "selected"}, {"selected_repository_ids", {web}}});
  ASSERT_EQ(put.status, 201) << put.body;
  auto stored = github->secret(SecretScope::org("acme"), "SHARED");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->value, "org-value");
  EXPECT_EQ(stored->visibility, "selected");
  EXPECT_EQ(stored->selected_repository_ids, std::vector<std::int64_t>{web});

  json one = body(call("GET", kOrg + "/SHARED"));
  EXPECT_EQ(one["visibility"], "selected");
  EXPECT_EQ(one["selected_repositories_url"],
            "http://api.github.test/orgs/acme/actions/secrets/SHARED/repositories");

  EXPECT_EQ(call("PUT", kOrg + "/SHARED/repositories/" + std::to_string(api)).status, 204);
  json repos = body(call("GET", kOrg + "/SHARED/repositories"));
  EXPECT_EQ(repos["total_count"], 2);
  EXPECT_EQ(repos["repositories"][0]["full_name"], "acme/web");
  EXPECT_EQ(call("DELETE", kOrg + "/SHARED/repositories/" + std::to_string(web)).status, 204);
  EXPECT_EQ(call("PUT", kOrg + "/SHARED/repositories",
                 json{{"selected_repository_ids", json::array({web, api})}})
                .status,
            204);
  EXPECT_EQ(github->secret(SecretScope::org("acme"), "SHARED")->selected_repository_ids.size(),
            2u);

  // Per-repository changes need visibility `selected`: 409 otherwise.
  ASSERT_EQ(put_secret(kOrg, "EVERYWHERE", "v", json{{"visibility", "all"}}).status, 201);
  EXPECT_EQ(call("PUT", kOrg + "/EVERYWHERE/repositories/" + std::to_string(web)).status, 409);
  EXPECT_EQ(call("GET", kOrg + "/NOPE/repositories").status, 404);
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
