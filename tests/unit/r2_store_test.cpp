// The R2 object store (plugins/cloudflare/r2_store.cpp) against the fake Cloudflare API and the
// fake S3 over loopback HTTP with orgd's HTTPS client: the bucket ensured once (an existing one
// accepted), objects put, got, listed over several ListObjectsV2 pages and removed, every S3
// request signed with the key pair derived from the token and checked by the fake; not_found,
// S3's error codes and messages in the errors, SlowDown retryable, no secret in any error; and
// the XML reader's entity decoding.
#include "plugins/cloudflare/r2_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/net/https_client.hpp"
#include "daemon/net/url.hpp"
#include "plugins/cloudflare/s3_xml.hpp"
#include "tests/fakes/fake_s3.hpp"

namespace orgd::cloudflare {
namespace {

using orgd::testing::FakeCloudflareServer;
using orgd::testing::FakeS3;
using orgd::testing::FakeS3Server;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kToken = "r2-store-test-token-canary-7d41";

class R2StoreTest : public ::testing::Test {
 protected:
  R2StoreTest() : s3_(FakeS3::Options{{}, 2, std::chrono::minutes{15}}) {
    cf_.cloudflare().add_token(kToken);
    orgd::testing::connect_r2(cf_.cloudflare(), s3_.s3());
  }

  std::unique_ptr<ObjectStore> store(const std::string& token = kToken,
                                     const std::string& prefix = "orgd/backups/") {
    R2Settings s;
    s.account_id = cf_.cloudflare().account_id();
    s.api_url = cf_.base_url();
    s.s3_url = s3_.base_url();
    s.store.bucket = "acme-backups";
    s.store.prefix = prefix;
    HttpClientOptions options;
    options.max_attempts = 1;
    options.provider = "cf";
    auto client = HttpsClient::create(options, nullptr);
    EXPECT_TRUE(client) << client.error().message;
    auto value = std::make_shared<const Secret>(Secret::from(token));
    return make_r2_store(
        s, client.value(), [value]() -> Result<std::shared_ptr<const Secret>> { return value; },
        nullptr);
  }
  // Every error message must be free of the token and of the secret derived from it.
  void expect_no_secret(const std::string& message, const std::string& token = kToken) {
    EXPECT_THAT(message, Not(HasSubstr(token)));
    EXPECT_THAT(message, Not(HasSubstr(orgd::testing::fake_sha256_hex(token))));
  }

  FakeCloudflareServer cf_;
  FakeS3Server s3_;
};

constexpr const char* kCreate = "POST /accounts/{account_id}/r2/buckets";

TEST_F(R2StoreTest, EnsureCreatesTheBucketOnceAndAcceptsAnExistingOne) {
  auto r2 = store();
  ASSERT_TRUE(r2->ensure()) << r2->ensure().error().message;
  EXPECT_TRUE(s3_.s3().has_bucket("acme-backups"));
  ASSERT_TRUE(r2->ensure());
  EXPECT_EQ(cf_.cloudflare().count(kCreate), 1u);
  // Another store (another orgd) finds it there: Cloudflare's 409 / 10004 is success.
  auto other = store();
  auto again = other->ensure();
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(cf_.cloudflare().count(kCreate), 2u);
  EXPECT_EQ(cf_.cloudflare().calls().back().status, 409);
  EXPECT_EQ(cf_.cloudflare().calls().back().header("authorization"),
            std::string{"Bearer "} + kToken);
}

TEST_F(R2StoreTest, ObjectsRoundTripSignedWithTheDerivedKeyPair) {
  auto r2 = store();
  ASSERT_TRUE(r2->ensure());
  const std::string bytes("\x00\x01 backup bytes \xff", 17);
  auto put = r2->put("orgd-vault-20261203T114109Z.bak", bytes);
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(s3_.s3().objects("acme-backups").at("orgd/backups/orgd-vault-20261203T114109Z.bak"),
            bytes);
  auto got = r2->get("orgd-vault-20261203T114109Z.bak");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got.value(), bytes);
  // A key with characters that are encoded once in the path.
  ASSERT_TRUE(r2->put("odd key $&+=.bak", "x"));
  EXPECT_EQ(r2->get("odd key $&+=.bak").value(), "x");

  const auto calls = s3_.s3().calls();
  ASSERT_FALSE(calls.empty());
  const std::string id = cf_.cloudflare().token_id(kToken);
  for (const auto& call : calls) {
    EXPECT_EQ(call.status, 200) << call.method << " " << call.path << " " << call.code;
    EXPECT_THAT(call.header("authorization"), HasSubstr("Credential=" + id + "/"));
    EXPECT_THAT(call.header("authorization"), HasSubstr("/auto/s3/aws4_request"));
  }
  // The key pair is derived once per store.
  EXPECT_EQ(cf_.cloudflare().count("GET /user/tokens/verify"), 1u);
}

TEST_F(R2StoreTest, ListFollowsContinuationTokensOverEveryPage) {
  auto r2 = store();
  ASSERT_TRUE(r2->ensure());
  for (const char* key : {"e.bak", "a.bak", "c&d <1>.bak", "b.bak", "d.bak"}) {
    ASSERT_TRUE(r2->put(key, std::string(3, 'x')));
  }
  s3_.s3().put_object("acme-backups", "elsewhere/z.bak", "not ours");
  s3_.s3().clear_calls();
  auto listed = r2->list();
  ASSERT_TRUE(listed) << listed.error().message;
  std::vector<std::string> keys;
  for (const auto& o : listed.value()) {
    keys.push_back(o.key);
    EXPECT_EQ(o.size, 3u);
    EXPECT_TRUE(o.modified.has_value());
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"a.bak", "b.bak", "c&d <1>.bak", "d.bak", "e.bak"}));
  // Five objects, two a page: three pages, the later two asked with the token the fake gave.
  const auto calls = s3_.s3().calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_THAT(calls[0].query, Not(HasSubstr("continuation-token")));
  EXPECT_THAT(calls[1].query, HasSubstr("continuation-token="));
  EXPECT_THAT(calls[2].query, HasSubstr("continuation-token="));
  for (const auto& c : calls) EXPECT_EQ(c.status, 200) << c.code;

  auto some = r2->list("c");
  ASSERT_TRUE(some);
  ASSERT_EQ(some.value().size(), 1u);
  EXPECT_EQ(some.value()[0].key, "c&d <1>.bak");
}

TEST_F(R2StoreTest, AMissingObjectIsNotFoundAndRemoveDeletes) {
  auto r2 = store();
  ASSERT_TRUE(r2->ensure());
  auto missing = r2->get("none.bak");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_THAT(missing.error().message, HasSubstr("NoSuchKey"));
  EXPECT_THAT(missing.error().message, HasSubstr("The specified key does not exist."));
  ASSERT_TRUE(r2->put("gone.bak", "x"));
  ASSERT_TRUE(r2->remove("gone.bak"));
  EXPECT_TRUE(s3_.s3().objects("acme-backups").empty());
  EXPECT_EQ(r2->get("gone.bak").error().code, ErrorCode::not_found);
}

TEST_F(R2StoreTest, S3ErrorsNameTheirCodeAndMessage) {
  auto r2 = store();
  // No ensure(): the bucket is not there.
  auto no_bucket = r2->put("x.bak", "x");
  ASSERT_FALSE(no_bucket);
  EXPECT_THAT(no_bucket.error().message,
              HasSubstr("404: NoSuchBucket: The specified bucket does not exist."));
  ASSERT_TRUE(r2->ensure());
  s3_.s3().set_read_only(true);
  auto denied = r2->put("x.bak", "x");
  ASSERT_FALSE(denied);
  EXPECT_THAT(denied.error().message, HasSubstr("403: AccessDenied: Access Denied"));
  EXPECT_EQ(denied.error().retry, Retry::permanent);
  s3_.s3().set_read_only(false);
  // SlowDown through the HTTPS client: it retries a 503 itself, then gives up retryable.
  s3_.s3().fail_next(1, 503, "SlowDown");
  auto slow = r2->put("x.bak", "x");
  ASSERT_FALSE(slow);
  EXPECT_THAT(slow.error().message, HasSubstr("503"));
  EXPECT_NE(slow.error().retry, Retry::permanent);
  EXPECT_EQ(s3_.s3().calls().back().code, "SlowDown");
  ASSERT_TRUE(r2->put("x.bak", "x"));  // the next interval's try
}

// A transport that hands every answer back as it came (no retries): what the store itself
// makes of S3's 429 and 503 SlowDown.
class DirectTransport final : public HttpTransport {
 public:
  DirectTransport(orgd::testing::FakeCloudflare& cf, FakeS3& s3, std::string s3_host)
      : cf_(cf), s3_(s3), s3_host_(std::move(s3_host)) {}
  Result<HttpResponse> send(HttpRequest request) override {
    auto url = net::parse_url(request.url);
    if (!url) return url.error();
    orgd::testing::FakeRequest r;
    r.method = request.method;
    r.target = url.value().target;
    const auto q = r.target.find('?');
    r.path = r.target.substr(0, q);
    r.query = q == std::string::npos ? "" : r.target.substr(q + 1);
    r.headers = request.headers;
    r.headers.push_back({"Host", url.value().host_header()});
    if (request.authorization) {
      r.headers.push_back({"Authorization", std::string{request.authorization->expose()}});
    }
    r.body = request.body;
    auto answer = url.value().host_header() == s3_host_ ? s3_.handle(r) : cf_.handle(r);
    return HttpResponse{answer.status, answer.headers, answer.body};
  }

 private:
  orgd::testing::FakeCloudflare& cf_;
  FakeS3& s3_;
  std::string s3_host_;
};

TEST(R2StoreDirect, SlowDownAndTooManyRequestsAreRetryable) {
  orgd::testing::FakeCloudflare cf;
  FakeS3 s3;
  cf.add_token(kToken);
  orgd::testing::connect_r2(cf, s3);
  R2Settings s;
  s.account_id = cf.account_id();
  s.api_url = "http://127.0.0.1:1/client/v4";
  s.s3_url = "http://127.0.0.1:2";
  s.store.bucket = "acme-backups";
  auto value = std::make_shared<const Secret>(Secret::from(kToken));
  auto r2 = make_r2_store(
      s, std::make_shared<DirectTransport>(cf, s3, "127.0.0.1:2"),
      [value]() -> Result<std::shared_ptr<const Secret>> { return value; }, nullptr);
  ASSERT_TRUE(r2->ensure());
  s3.fail_next(1, 503, "SlowDown");
  auto slow = r2->put("x.bak", "x");
  ASSERT_FALSE(slow);
  EXPECT_THAT(slow.error().message, HasSubstr("503: SlowDown: Please reduce your request rate."));
  EXPECT_NE(slow.error().retry, Retry::permanent);
  s3.fail_next(1, 429, "SlowDown");
  auto many = r2->get("x.bak");
  ASSERT_FALSE(many);
  EXPECT_NE(many.error().retry, Retry::permanent);
  s3.fail_next(1, 500, "InternalError");
  auto internal = r2->list();
  ASSERT_FALSE(internal);
  EXPECT_THAT(internal.error().message, HasSubstr("500: InternalError"));
  EXPECT_EQ(internal.error().retry, Retry::retryable);
  ASSERT_TRUE(r2->put("x.bak", "x"));
  EXPECT_EQ(s3.objects("acme-backups").at("x.bak"), "x");
}

TEST_F(R2StoreTest, NoSecretInAnyError) {
  // A wrong key pair: the fake derives another secret than the client.
  ASSERT_TRUE(store()->ensure());
  s3_.s3().set_key_lookup(
      [](const std::string&) -> std::optional<std::string> { return std::string(64, 'f'); });
  auto r2 = store();
  auto refused = r2->put("x.bak", "x");
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.error().message, HasSubstr("SignatureDoesNotMatch"));
  expect_no_secret(refused.error().message);
  auto listed = r2->list();
  ASSERT_FALSE(listed);
  expect_no_secret(listed.error().message);
  // A token Cloudflare does not know: refused at verify, and at bucket creation.
  const std::string unknown = "r2-unknown-token-canary-99";
  auto stranger = store(unknown);
  auto ensured = stranger->ensure();
  ASSERT_FALSE(ensured);
  expect_no_secret(ensured.error().message, unknown);
  auto got = stranger->get("x.bak");
  ASSERT_FALSE(got);
  EXPECT_THAT(got.error().message, HasSubstr("R2 credentials"));
  expect_no_secret(got.error().message, unknown);
}

TEST_F(R2StoreTest, AnAccountTokenIsVerifiedAtTheAccountsEndpoint) {
  const std::string account_token = "r2-account-token-canary-5";
  cf_.cloudflare().add_token(account_token, /*account=*/true);
  auto r2 = store(account_token);
  ASSERT_TRUE(r2->ensure());
  auto put = r2->put("x.bak", "x");
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_EQ(cf_.cloudflare().count("GET /accounts/{account_id}/tokens/verify"), 1u);
}

TEST(R2Xml, DecodesEntitiesAndCdata) {
  EXPECT_EQ(s3xml::decode("a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;&#xE9;").value(),
            "a&b<c>\"'AB\xC3\xA9");
  EXPECT_EQ(s3xml::decode("<![CDATA[x&y<z>]]>!").value(), "x&y<z>!");
  EXPECT_FALSE(s3xml::decode("a & b"));
  EXPECT_FALSE(s3xml::decode("&bogus;"));
  EXPECT_FALSE(s3xml::decode("&#0;"));
  const std::string xml =
      "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"x\"><Prefix/><Contents><Key>a&amp;b</Key>"
      "</Contents><Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated>"
      "</ListBucketResult>";
  const auto contents = s3xml::elements(xml, "Contents");
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(s3xml::text(contents[0], "Key").value(), "a&b");
  EXPECT_EQ(s3xml::text(xml, "Prefix").value(), "");
  EXPECT_EQ(s3xml::text(xml, "IsTruncated").value(), "false");
  // <KeyCount> is not <Key>.
  EXPECT_FALSE(s3xml::text("<KeyCount>2</KeyCount>", "Key"));
}

}  // namespace
}  // namespace orgd::cloudflare
