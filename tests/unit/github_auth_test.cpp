// GitHub auth: the App's RS256 JWT verified with the public key and its claims read back; the
// installation token fetched, cached, refreshed before expiry and after a 401, under a manual
// clock, against a stub transport; GitHub's errors mapped to how they may be retried.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/timestamps.hpp"
#include "plugins/github/auth.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd::github {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

struct KeyPair {
  std::string private_pem;
  EVP_PKEY* key = nullptr;  // for verifying
  ~KeyPair() { EVP_PKEY_free(key); }
};

std::unique_ptr<KeyPair> rsa_key() {
  auto pair = std::make_unique<KeyPair>();
  pair->key = EVP_RSA_gen(2048);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pair->key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  pair->private_pem.assign(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  return pair;
}

const KeyPair& app_key() {
  static const auto key = rsa_key();
  return *key;
}

std::string unbase64url(std::string_view text) {
  std::string out(text.size(), '\0');
  std::size_t size = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &size, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return "<not base64url>";
  }
  out.resize(size);
  return out;
}

struct Jwt {
  nlohmann::json header, claims;
  bool signature_valid = false;
};

Jwt read_jwt(std::string_view jwt, EVP_PKEY* key) {
  Jwt out;
  const auto first = jwt.find('.');
  const auto second = jwt.find('.', first + 1);
  if (first == std::string_view::npos || second == std::string_view::npos) return out;
  out.header = nlohmann::json::parse(unbase64url(jwt.substr(0, first)), nullptr, false);
  out.claims =
      nlohmann::json::parse(unbase64url(jwt.substr(first + 1, second - first - 1)), nullptr, false);
  const std::string signature = unbase64url(jwt.substr(second + 1));
  const std::string_view signed_part = jwt.substr(0, second);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  out.signature_valid =
      EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(signed_part.data()),
                       signed_part.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return out;
}

// Answers from a script and records what was sent (with the Authorization value, which a real
// transport would only write to the wire).
class StubTransport final : public HttpTransport {
 public:
  struct Sent {
    HttpRequest request;
    std::string authorization;
  };

  Result<HttpResponse> send(HttpRequest request) override {
    std::lock_guard lock(mutex_);
    Sent sent{request, request.authorization ? std::string(request.authorization->expose()) : ""};
    sent_.push_back(std::move(sent));
    if (answers_.empty()) return unavailable("stub: no answer scripted");
    auto answer = std::move(answers_.front());
    answers_.pop_front();
    return answer;
  }

  void answer(Result<HttpResponse> response) {
    std::lock_guard lock(mutex_);
    answers_.push_back(std::move(response));
  }
  void answer(int status, std::string body, std::vector<HttpHeader> headers = {}) {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    answer(Result<HttpResponse>(std::move(r)));
  }
  std::vector<Sent> sent() const {
    std::lock_guard lock(mutex_);
    return sent_;
  }

 private:
  mutable std::mutex mutex_;
  std::deque<Result<HttpResponse>> answers_;
  std::vector<Sent> sent_;
};

class AppAuthTest : public ::testing::Test {
 protected:
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<StubTransport> transport = std::make_shared<StubTransport>();

  std::unique_ptr<AppAuth> make(std::string app_id = "12345") {
    AppAuth::Options options;
    options.api_url = "https://api.example.test";
    options.app_id = std::move(app_id);
    options.installation_id = "67890";
    auto auth = AppAuth::create(options, Secret::from(app_key().private_pem), transport, clock);
    EXPECT_TRUE(auth) << auth.error().message;
    return auth ? std::move(auth).value() : nullptr;
  }

  // A 201 whose token expires `lifetime` from the clock's now.
  void token_answer(const std::string& token, std::chrono::seconds lifetime = 3600s) {
    nlohmann::json body = {{"token", token},
                           {"expires_at", format_rfc3339(clock->now() + lifetime)},
                           {"permissions", {{"actions", "write"}}}};
    transport->answer(201, body.dump());
  }
};

TEST_F(AppAuthTest, JwtIsSignedRs256WithGithubsClaims) {
  auto auth = make();
  ASSERT_TRUE(auth);
  auto jwt = auth->make_jwt();
  ASSERT_TRUE(jwt) << jwt.error().message;
  const Jwt read = read_jwt(jwt.value().expose(), app_key().key);
  EXPECT_TRUE(read.signature_valid);
  EXPECT_EQ(read.header, nlohmann::json({{"alg", "RS256"}, {"typ", "JWT"}}));
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(clock->now().time_since_epoch()).count();
  EXPECT_EQ(read.claims["iat"], now - 60);
  EXPECT_EQ(read.claims["exp"], now + 9 * 60);
  EXPECT_EQ(read.claims["iss"], 12345);  // the application ID as the number GitHub issued
  // No padding anywhere.
  EXPECT_EQ(jwt.value().expose().find('='), std::string_view::npos);
}

TEST_F(AppAuthTest, JwtWithAClientIdAndATamperedJwtFailsVerification) {
  auto auth = make("Iv23liExample");
  ASSERT_TRUE(auth);
  auto jwt = auth->make_jwt();
  ASSERT_TRUE(jwt);
  const Jwt read = read_jwt(jwt.value().expose(), app_key().key);
  EXPECT_TRUE(read.signature_valid);
  EXPECT_EQ(read.claims["iss"], "Iv23liExample");

  // The verification above can fail: another iss under the same signature does not verify.
  std::string forged(jwt.value().expose());
  const auto first = forged.find('.');
  const auto second = forged.find('.', first + 1);
  nlohmann::json claims = read.claims;
  claims["iss"] = "Iv23liOther";
  const std::string payload = claims.dump();
  std::string encoded(
      sodium_base64_encoded_len(payload.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(encoded.data(), encoded.size(),
                    reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  encoded.resize(encoded.size() - 1);
  forged.replace(first + 1, second - first - 1, encoded);
  EXPECT_FALSE(read_jwt(forged, app_key().key).signature_valid);
}

TEST_F(AppAuthTest, FetchesAnInstallationTokenOfAnyLengthAndCachesIt) {
  auto auth = make();
  ASSERT_TRUE(auth);
  // GitHub's newer installation tokens are ~520 characters and vary in length.
  const std::string token = "ghs_12345_" + std::string(600, 'k');
  token_answer(token);
  auto header = auth->authorization();
  ASSERT_TRUE(header) << header.error().message;
  EXPECT_EQ(header.value()->expose(), "Bearer " + token);

  const auto sent = transport->sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].request.method, "POST");
  EXPECT_EQ(sent[0].request.url, "https://api.example.test/app/installations/67890/access_tokens");
  bool accept = false, version = false;
  for (const auto& h : sent[0].request.headers) {
    accept = accept || (h.name == "Accept" && h.value == "application/vnd.github+json");
    version = version || (h.name == "X-GitHub-Api-Version" && h.value == "2022-11-28");
  }
  EXPECT_TRUE(accept);
  EXPECT_TRUE(version);
  ASSERT_EQ(sent[0].authorization.rfind("Bearer ", 0), 0u);
  const Jwt jwt = read_jwt(std::string_view(sent[0].authorization).substr(7), app_key().key);
  EXPECT_TRUE(jwt.signature_valid);
  EXPECT_EQ(jwt.claims["iss"], 12345);

  // Cached: the same header, no second call.
  clock->advance(30min);
  auto again = auth->authorization();
  ASSERT_TRUE(again);
  EXPECT_EQ(again.value().get(), header.value().get());
  EXPECT_EQ(transport->sent().size(), 1u);
  EXPECT_EQ(auth->tokens_fetched(), 1);
}

TEST_F(AppAuthTest, RefreshedWhenLessThanFiveMinutesRemain) {
  auto auth = make();
  ASSERT_TRUE(auth);
  token_answer("ghs_first");
  ASSERT_TRUE(auth->authorization());
  clock->advance(54min + 59s);  // 5 min 1 s left: still good
  auto still = auth->authorization();
  ASSERT_TRUE(still);
  EXPECT_EQ(still.value()->expose(), "Bearer ghs_first");
  EXPECT_EQ(auth->tokens_fetched(), 1);

  clock->advance(2s);  // 4 min 59 s left: refreshed
  token_answer("ghs_second");
  auto fresh = auth->authorization();
  ASSERT_TRUE(fresh) << fresh.error().message;
  EXPECT_EQ(fresh.value()->expose(), "Bearer ghs_second");
  EXPECT_EQ(auth->tokens_fetched(), 2);
  // The JWT of the refresh is a new one, issued at the new now.
  const auto sent = transport->sent();
  ASSERT_EQ(sent.size(), 2u);
  const Jwt jwt = read_jwt(std::string_view(sent[1].authorization).substr(7), app_key().key);
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(clock->now().time_since_epoch()).count();
  EXPECT_EQ(jwt.claims["iat"], now - 60);
}

TEST_F(AppAuthTest, AFailedEarlyRefreshKeepsTheTokenThatStillWorks) {
  auto auth = make();
  ASSERT_TRUE(auth);
  token_answer("ghs_current");
  ASSERT_TRUE(auth->authorization());
  clock->advance(56min);  // 4 min left: due for a refresh
  transport->answer(502, "bad gateway");
  auto kept = auth->authorization();
  ASSERT_TRUE(kept) << kept.error().message;
  EXPECT_EQ(kept.value()->expose(), "Bearer ghs_current");
  EXPECT_EQ(transport->sent().size(), 2u);  // the refresh was tried
  // Tried again on the next call.
  token_answer("ghs_next");
  EXPECT_EQ(auth->authorization().value()->expose(), "Bearer ghs_next");

  // Once expired (or after a 401), a failed fetch is an error: no stale token is handed out.
  clock->advance(61min);
  transport->answer(502, "bad gateway");
  auto expired = auth->authorization();
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().retry, Retry::retryable);
  token_answer("ghs_again");
  ASSERT_TRUE(auth->authorization());
  auth->invalidate();
  transport->answer(502, "bad gateway");
  EXPECT_FALSE(auth->authorization());
}

TEST_F(AppAuthTest, InvalidateFetchesANewToken) {
  auto auth = make();
  ASSERT_TRUE(auth);
  token_answer("ghs_old");
  ASSERT_TRUE(auth->authorization());
  auth->invalidate();  // a 401 elsewhere
  token_answer("ghs_new");
  auto header = auth->authorization();
  ASSERT_TRUE(header);
  EXPECT_EQ(header.value()->expose(), "Bearer ghs_new");
  EXPECT_EQ(auth->tokens_fetched(), 2);
  // And cached again afterwards.
  ASSERT_TRUE(auth->authorization());
  EXPECT_EQ(transport->sent().size(), 2u);
}

TEST_F(AppAuthTest, ConcurrentCallersShareOneFetch) {
  auto auth = make();
  ASSERT_TRUE(auth);
  token_answer("ghs_shared");
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto h = auth->authorization();
      if (h && h.value()->expose() == "Bearer ghs_shared") ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8);
  EXPECT_EQ(transport->sent().size(), 1u);
}

TEST_F(AppAuthTest, ErrorsSayHowTheyMayBeRetried) {
  auto auth = make();
  ASSERT_TRUE(auth);
  struct Case {
    int status;
    std::string body;
    std::vector<HttpHeader> headers;
    Retry retry;
    std::chrono::milliseconds after;
    std::string text;
  };
  const auto reset =
      std::chrono::duration_cast<std::chrono::seconds>(clock->now().time_since_epoch()).count() +
      120;
  const std::vector<Case> cases = {
      {401,
       R"({"message":"A JSON web token could not be decoded"})",
       {},
       Retry::permanent,
       0ms,
       "401: A JSON web token could not be decoded"},
      {403,
       R"({"message":"Resource not accessible by integration"})",
       {},
       Retry::permanent,
       0ms,
       "403: Resource not accessible by integration"},
      {404, R"({"message":"Not Found"})", {}, Retry::permanent, 0ms, "404: Not Found"},
      {422,
       R"({"message":"Validation Failed"})",
       {},
       Retry::permanent,
       0ms,
       "422: Validation Failed"},
      {502, "<html>bad gateway</html>", {}, Retry::retryable, 0ms, "GitHub answered 502"},
      {403,
       R"({"message":"API rate limit exceeded"})",
       {{"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", std::to_string(reset)}},
       Retry::rate_limited,
       120s,
       "403"},
      {429, R"({"message":"slow down"})", {{"retry-after", "30"}}, Retry::rate_limited, 30s, "429"},
      {403,
       R"({"message":"You have exceeded a secondary rate limit."})",
       {},
       Retry::rate_limited,
       60s,
       "secondary rate limit"},
  };
  for (const Case& c : cases) {
    transport->answer(c.status, c.body, c.headers);
    auto header = auth->authorization();
    ASSERT_FALSE(header) << c.status;
    EXPECT_EQ(header.error().retry, c.retry) << c.status << " " << c.body;
    EXPECT_EQ(header.error().retry_after, c.after) << c.status << " " << c.body;
    EXPECT_THAT(header.error().message, HasSubstr("creating a GitHub App installation token"));
    EXPECT_THAT(header.error().message, HasSubstr(c.text));
  }
  // A transport failure keeps its own kind; the next call tries again (errors are not cached).
  transport->answer(Result<HttpResponse>(rate_limited("circuit open", 7s)));
  auto failed = auth->authorization();
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().retry, Retry::rate_limited);
  EXPECT_EQ(failed.error().retry_after, 7s);
  token_answer("ghs_after_errors");
  auto header = auth->authorization();
  ASSERT_TRUE(header) << header.error().message;
  EXPECT_EQ(header.value()->expose(), "Bearer ghs_after_errors");
}

TEST_F(AppAuthTest, AnAnswerWithoutATokenIsRetryableAndNamesNoSecret) {
  auto auth = make();
  ASSERT_TRUE(auth);
  transport->answer(201, R"({"token":"ghs_canary_value"})");  // no expires_at
  auto header = auth->authorization();
  ASSERT_FALSE(header);
  EXPECT_EQ(header.error().retry, Retry::retryable);
  EXPECT_THAT(header.error().message, Not(HasSubstr("canary")));
  transport->answer(201, "not json");
  EXPECT_FALSE(auth->authorization());
}

TEST(AppAuthCreateTest, RefusesKeysThatAreNotRsaPem) {
  auto transport = std::make_shared<StubTransport>();
  AppAuth::Options options{"https://api.example.test", "1", "2"};
  auto garbage = AppAuth::create(options, Secret::from("-----BEGIN CANARY-----\nxyz\n"), transport,
                                 std::make_shared<ManualClock>());
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error().retry, Retry::permanent);
  EXPECT_THAT(garbage.error().message, HasSubstr("not a PEM private key"));
  EXPECT_THAT(garbage.error().message, Not(HasSubstr("CANARY")));

  EVP_PKEY* ec = EVP_EC_gen("P-256");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  const std::string pem(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  auto not_rsa =
      AppAuth::create(options, Secret::from(pem), transport, std::make_shared<ManualClock>());
  ASSERT_FALSE(not_rsa);
  EXPECT_THAT(not_rsa.error().message, HasSubstr("not an RSA key"));
}

TEST(TokenAuthTest, BearerFromTheEnvironment) {
  const SecretSource source{
      Environment(std::map<std::string, std::string>{{"GH_TOKEN", "ghp_example"}})};
  auto auth = TokenAuth::from_env(source, "GH_TOKEN");
  ASSERT_TRUE(auth);
  auto header = auth.value()->authorization();
  ASSERT_TRUE(header);
  EXPECT_EQ(header.value()->expose(), "Bearer ghp_example");
  auth.value()->invalidate();
  EXPECT_EQ(auth.value()->authorization().value()->expose(), "Bearer ghp_example");

  auto missing = TokenAuth::from_env(source, "GH_OTHER");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().retry, Retry::permanent);
  EXPECT_THAT(missing.error().message, HasSubstr("GH_OTHER"));
}

TEST(GithubTimeTest, ParsesGithubsTimestamps) {
  const auto t = parse_github_time("2016-07-11T22:14:10Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count(),
            1468275250);
  EXPECT_EQ(parse_github_time("2016-07-11T22:14:10.123Z"), t);
  EXPECT_EQ(parse_github_time("2016-07-11T22:14:10+00:00"), t);
  for (const char* bad :
       {"", "2016-07-11", "2016-07-11T22:14:10", "2016-13-11T22:14:10Z", "2016-02-30T22:14:10Z",
        "2016-07-11T22:14:10+02:00", "2016-07-11T25:14:10Z"}) {
    EXPECT_FALSE(parse_github_time(bad)) << bad;
  }
}

TEST(MakeAuthTest, TokenOrAppFromTheSettings) {
  const SecretSource source{
      Environment(std::map<std::string, std::string>{{"GH_TOKEN", "ghp_from_env"}})};
  Settings token_settings;
  token_settings.name = "gh";
  token_settings.token_env = "GH_TOKEN";
  auto token = make_auth(token_settings, source, nullptr, nullptr);
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token.value()->authorization().value()->expose(), "Bearer ghp_from_env");

  orgd::testing::TempDir dir("orgd-github-auth");
  const std::string key_file = dir.str() + "/app.pem";
  std::ofstream(key_file) << app_key().private_pem;
  Settings app_settings;
  app_settings.name = "gh";
  app_settings.api_url = "http://127.0.0.1:1";
  app_settings.app = AppSettings{"12345", "67890", key_file};
  auto transport = std::make_shared<StubTransport>();
  auto clock = std::make_shared<ManualClock>();
  auto app = make_auth(app_settings, source, transport, clock);
  ASSERT_TRUE(app) << app.error().message;
  nlohmann::json body = {{"token", "ghs_app"}, {"expires_at", format_rfc3339(clock->now() + 1h)}};
  transport->answer(201, body.dump());
  auto header = app.value()->authorization();
  ASSERT_TRUE(header) << header.error().message;
  EXPECT_EQ(header.value()->expose(), "Bearer ghs_app");
  ASSERT_EQ(transport->sent().size(), 1u);
  EXPECT_EQ(transport->sent()[0].request.url,
            "http://127.0.0.1:1/app/installations/67890/access_tokens");

  app_settings.app->private_key_file = dir.str() + "/missing.pem";
  auto missing = make_auth(app_settings, source, transport, clock);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().retry, Retry::permanent);
  EXPECT_THAT(missing.error().message, HasSubstr("missing.pem"));

  const HttpClientOptions options = http_client_options(app_settings);
  EXPECT_EQ(options.provider, "gh");
  EXPECT_EQ(options.rate_limit_headers, RateLimitHeaders::github);
}

}  // namespace
}  // namespace orgd::github
