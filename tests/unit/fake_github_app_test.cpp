#include <openssl/rsa.h>

#include <set>

#include "tests/support/temp_dir.hpp"
#include "tests/unit/fake_github_test_support.hpp"

namespace orgd::testing::fake_github_test {
namespace {

using FakeGithubApp = FakeGithubTest;

FakeResponse mint(FakeGithub& github, const std::string& jwt, std::int64_t installation,
                  const std::string& scheme = "Bearer ") {
  return github.handle(request("POST",
                               "/app/installations/" + std::to_string(installation) +
                                   "/access_tokens",
                               "", scheme + jwt));
}

std::string other_private_key() {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_RSA_gen(2048), EVP_PKEY_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

TEST_F(FakeGithubApp, AJwtSignedWithTheAppKeyBuysAnInstallationToken) {
  const std::string pem = github->app_private_key_pem();
  EXPECT_NE(pem.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(read_file(github->app_private_key_file()), pem);

  const json claims{{"iat", clock.seconds() - 60}, {"exp", clock.seconds() + 540},
                    {"iss", github->app_id()}};
  auto answer = mint(*github, make_jwt(pem, claims), github->installation_id());
  ASSERT_EQ(answer.status, 201) << answer.body;
  json b = body(answer);
  const std::string token = b["token"];
  EXPECT_EQ(token.rfind("ghs_", 0), 0u);
  EXPECT_GT(token.size(), 300u);  // the long form: nothing may assume 40 characters
  EXPECT_EQ(b["expires_at"], "2026-11-30T01:53:20Z");  // one hour after the test clock
  EXPECT_TRUE(b["permissions"].is_object());

  // The token then works like a PAT, under either scheme.
  auto use = github->handle(request("GET", "/repos/acme/web/actions/secrets", "", "token " + token));
  EXPECT_EQ(use.status, 200);
  EXPECT_EQ(github->issued_installation_tokens(), std::vector<std::string>{token});

  // It lapses an hour later.
  clock.now += 3601s;
  auto expired = github->handle(request("GET", "/repos/acme/web/actions/secrets", "",
                                        "Bearer " + token));
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(body(expired)["message"], "Bad credentials");
}

TEST_F(FakeGithubApp, TheClientIdIsAcceptedAsIssuerAndTokensVaryInLength) {
  const std::string pem = github->app_private_key_pem();
  std::set<std::size_t> lengths;
  for (int i = 0; i < 6; ++i) {
    const json claims{{"iat", clock.seconds() - 60}, {"exp", clock.seconds() + 600},
                      {"iss", i % 2 == 0 ? json(github->app_client_id())
                                         : json(std::to_string(github->app_id()))}};
    auto answer = mint(*github, make_jwt(pem, claims), github->installation_id());
    ASSERT_EQ(answer.status, 201) << answer.body;
    lengths.insert(body(answer)["token"].get<std::string>().size());
  }
  EXPECT_GT(lengths.size(), 1u);
}

TEST_F(FakeGithubApp, TheOldShortTokenFormCanBeAskedFor) {
  const json claims{{"iat", clock.seconds()}, {"exp", clock.seconds() + 60},
                    {"iss", github->app_id()}};
  FakeRequest r = request("POST",
                          "/app/installations/" + std::to_string(github->installation_id()) +
                              "/access_tokens",
                          "", "Bearer " + make_jwt(github->app_private_key_pem(), claims));
  r.headers.push_back({"X-GitHub-Stateless-S2S-Token", "disabled"});
  auto answer = github->handle(r);
  ASSERT_EQ(answer.status, 201);
  EXPECT_EQ(body(answer)["token"].get<std::string>().size(), 40u);
}

TEST_F(FakeGithubApp, BadJwtsAreRefusedWith401) {
  const std::string pem = github->app_private_key_pem();
  const auto now = clock.seconds();
  const auto inst = github->installation_id();
  const json good{{"iat", now - 60}, {"exp", now + 540}, {"iss", github->app_id()}};
  ASSERT_EQ(mint(*github, make_jwt(pem, good), inst).status, 201);

  auto with = [&](const char* key, json value) {
    json c = good;
    c[key] = std::move(value);
    return make_jwt(pem, c);
  };
  EXPECT_EQ(mint(*github, make_jwt(other_private_key(), good), inst).status, 401);
  EXPECT_EQ(mint(*github, with("exp", now + 601), inst).status, 401);  // over 10 minutes
  EXPECT_EQ(mint(*github, with("exp", now - 1), inst).status, 401);    // expired
  EXPECT_EQ(mint(*github, with("iat", now + 60), inst).status, 401);   // issued in the future
  EXPECT_EQ(mint(*github, with("iss", 999), inst).status, 401);        // another App
  EXPECT_EQ(mint(*github, with("iss", "Iv1.someoneelse"), inst).status, 401);
  EXPECT_EQ(mint(*github, make_jwt(pem, good, json{{"alg", "HS256"}, {"typ", "JWT"}}), inst)
                .status,
            401);
  // A signature over other claims: the token was altered after signing.
  std::string tampered = make_jwt(pem, good);
  const auto d1 = tampered.find('.'), d2 = tampered.rfind('.');
  json altered = good;
  altered["exp"] = now + 590;  // still a good claim set, but not the signed one
  tampered = tampered.substr(0, d1 + 1) + b64url(altered.dump()) + tampered.substr(d2);
  EXPECT_EQ(mint(*github, tampered, inst).status, 401);
  EXPECT_EQ(mint(*github, "not.a.jwt", inst).status, 401);
  EXPECT_EQ(mint(*github, kToken, inst, "token ").status, 401);  // a PAT is no JWT
  EXPECT_EQ(mint(*github, make_jwt(pem, good), inst + 1).status, 404);
  EXPECT_EQ(github->issued_installation_tokens().size(), 1u);
}

TEST_F(FakeGithubApp, CredentialsAreCheckedOnEveryRoute) {
  auto none = github->handle(request("GET", "/repos/acme/web/actions/secrets", "", ""));
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(body(none)["message"], "Requires authentication");
  auto wrong = github->handle(request("GET", "/repos/acme/web/actions/secrets", "", "Bearer nope"));
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(body(wrong)["message"], "Bad credentials");
  EXPECT_EQ(body(wrong)["documentation_url"], "https://docs.github.com/rest");
  EXPECT_EQ(github->handle(request("GET", "/repos/acme/web/actions/secrets", "",
                                   std::string("token ") + kToken))
                .status,
            200);
  EXPECT_EQ(github->handle(request("GET", "/repos/acme/web/actions/secrets", "",
                                   std::string("Basic ") + kToken))
                .status,
            401);
  github->revoke_token(kToken);
  EXPECT_EQ(call("GET", "/repos/acme/web/actions/secrets").status, 401);
  // /rate_limit answers without credentials, as GitHub's does.
  EXPECT_EQ(github->handle(request("GET", "/rate_limit", "", "")).status, 200);
}

}  // namespace
}  // namespace orgd::testing::fake_github_test
