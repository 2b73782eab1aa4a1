// The fake S3's own signature check (tests/fakes/fake_s3.cpp), so that tests against it prove
// something: AWS's published GET object example is accepted as AWS signed it (the fake's
// canonicalization is its own, not the client's), and a request whose secret, headers, body,
// date, path or query differ from what was signed is refused with S3's error code.
#include "tests/fakes/fake_s3.hpp"

#include <gtest/gtest.h>

#include <ctime>

#include "plugins/cloudflare/sigv4.hpp"

namespace orgd::testing {
namespace {

using std::chrono::system_clock;

system_clock::time_point at(const char* amz_date) {
  std::tm tm{};
  strptime(amz_date, "%Y%m%dT%H%M%SZ", &tm);
  return system_clock::from_time_t(timegm(&tm));
}

constexpr const char* kDate = "20261203T114109Z";
constexpr const char* kKeyId = "tok00000000000000000000000000001";
constexpr const char* kSecret = "5b1a1c7e1d0f5e1c7c6d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3";

class FakeS3Test : public ::testing::Test {
 protected:
  FakeS3Test() : s3_(FakeS3::Options{[] { return at(kDate); }, 1000, std::chrono::minutes{15}}) {
    s3_.add_key(kKeyId, kSecret);
    s3_.add_bucket("backups");
  }

  // A request signed by the client's signer, then `change` applied to what goes on the wire.
  FakeResponse send(const std::string& method, const std::string& path, const std::string& body,
                    const std::function<void(FakeRequest&)>& change = {},
                    const std::string& secret = kSecret, const std::string& date = kDate) {
    cloudflare::sigv4::Request r;
    r.method = method;
    r.encoded_path = path;
    r.host = "127.0.0.1:9000";
    r.amz_date = date;
    r.payload_sha256 = cloudflare::sigv4::sha256_hex(body);
    const auto s = cloudflare::sigv4::sign(r, kKeyId, Secret::from(secret));
    FakeRequest wire;
    wire.method = method;
    wire.path = path;
    wire.body = body;
    wire.headers = {{"Host", r.host}, {"Authorization", std::string{s.authorization.expose()}}};
    for (const auto& h : cloudflare::sigv4::wire_headers(r)) wire.headers.push_back(h);
    if (change) change(wire);
    wire.target = wire.path + (wire.query.empty() ? "" : "?" + wire.query);
    return s3_.handle(wire);
  }
  std::string code_of(const FakeResponse& r) {
    const auto at = r.body.find("<Code>");
    return at == std::string::npos ? "" : r.body.substr(at + 6, r.body.find("</Code>") - at - 6);
  }

  FakeS3 s3_;
};

TEST_F(FakeS3Test, AcceptsAwsPublishedGetObjectExample) {
  FakeS3 aws(
      FakeS3::Options{[] { return at("20130524T000000Z"); }, 1000, std::chrono::minutes{15}});
  aws.add_key("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
  const std::string signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
  auto request = [&](const std::string& sig) {
    FakeRequest r;
    r.method = "GET";
    r.path = r.target = "/test.txt";
    r.headers = {
        {"Host", "examplebucket.s3.amazonaws.com"},
        {"Range", "bytes=0-9"},
        {"x-amz-content-sha256",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"x-amz-date", "20130524T000000Z"},
        {"Authorization",
         "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
         "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=" +
             sig}};
    return r;
  };
  // Signed as AWS signed it: past the check (the fake has no such bucket).
  EXPECT_EQ(code_of(aws.handle(request(signature))), "NoSuchBucket");
  std::string wrong = signature;
  wrong[10] = wrong[10] == '0' ? '1' : '0';
  EXPECT_EQ(code_of(aws.handle(request(wrong))), "SignatureDoesNotMatch");
}

TEST_F(FakeS3Test, ASignedRequestIsServed) {
  EXPECT_EQ(send("PUT", "/backups/a%20b.bak", "bytes").status, 200);
  EXPECT_EQ(s3_.objects("backups").at("a b.bak"), "bytes");
  const auto got = send("GET", "/backups/a%20b.bak", "");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "bytes");
}

TEST_F(FakeS3Test, AWrongSecretIsRefused) {
  const auto r = send("PUT", "/backups/x", "bytes", {}, std::string(64, 'a'));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(code_of(r), "SignatureDoesNotMatch");
  EXPECT_TRUE(s3_.objects("backups").empty());
}

TEST_F(FakeS3Test, ATamperedRequestIsRefused) {
  EXPECT_EQ(code_of(send("PUT", "/backups/x", "bytes",
                         [](FakeRequest& r) { r.headers[0].value = "127.0.0.1:9001"; })),
            "SignatureDoesNotMatch");
  EXPECT_EQ(
      code_of(send("PUT", "/backups/x", "bytes", [](FakeRequest& r) { r.path = "/backups/y"; })),
      "SignatureDoesNotMatch");
  EXPECT_EQ(code_of(send("GET", "/backups", "", [](FakeRequest& r) { r.query = "list-type=2"; })),
            "SignatureDoesNotMatch");
  EXPECT_EQ(code_of(send("PUT", "/backups/x", "bytes", [](FakeRequest& r) { r.body = "other"; })),
            "XAmzContentSHA256Mismatch");
  // The body and its hash changed together: the signature covers the hash.
  EXPECT_EQ(code_of(send("PUT", "/backups/x", "bytes",
                         [](FakeRequest& r) {
                           r.body = "other";
                           for (auto& h : r.headers) {
                             if (h.name == "x-amz-content-sha256")
                               h.value = fake_sha256_hex("other");
                           }
                         })),
            "SignatureDoesNotMatch");
  EXPECT_EQ(code_of(send("PUT", "/backups/x", "bytes",
                         [](FakeRequest& r) {
                           for (auto& h : r.headers) {
                             if (h.name == "x-amz-date") h.value = "20261203T114110Z";
                           }
                         })),
            "SignatureDoesNotMatch");
  EXPECT_TRUE(s3_.objects("backups").empty());
}

TEST_F(FakeS3Test, AStaleOrMismatchedDateIsRefused) {
  EXPECT_EQ(code_of(send("GET", "/backups/x", "", {}, kSecret, "20261203T090000Z")),
            "RequestTimeTooSkewed");
  EXPECT_EQ(code_of(send("GET", "/backups/x", "",
                         [](FakeRequest& r) {
                           for (auto& h : r.headers) {
                             if (h.name == "x-amz-date") h.value = "20261204T000000Z";
                           }
                         })),
            "AuthorizationHeaderMalformed");
}

TEST_F(FakeS3Test, UnknownKeysAndMissingSignaturesAreRefused) {
  const auto unknown = send("GET", "/backups/x", "", [](FakeRequest& r) {
    auto& auth = r.headers[1].value;
    auth.replace(auth.find(kKeyId), std::string{kKeyId}.size(), "tok-unknown");
  });
  EXPECT_EQ(code_of(unknown), "InvalidAccessKeyId");
  const auto anonymous =
      send("GET", "/backups/x", "", [](FakeRequest& r) { r.headers.erase(r.headers.begin() + 1); });
  EXPECT_EQ(anonymous.status, 403);
  EXPECT_EQ(code_of(anonymous), "AccessDenied");
}

TEST_F(FakeS3Test, ErrorsAreS3Documents) {
  const auto missing = send("GET", "/backups/none", "");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(code_of(missing), "NoSuchKey");
  EXPECT_EQ(code_of(send("GET", "/nobucket/x", "")), "NoSuchBucket");
  s3_.set_read_only(true);
  EXPECT_EQ(code_of(send("PUT", "/backups/x", "b")), "AccessDenied");
  s3_.fail_next(1, 503, "SlowDown");
  const auto slow = send("GET", "/backups/none", "");
  EXPECT_EQ(slow.status, 503);
  EXPECT_EQ(code_of(slow), "SlowDown");
  EXPECT_EQ(s3_.calls().back().code, "SlowDown");
}

}  // namespace
}  // namespace orgd::testing
