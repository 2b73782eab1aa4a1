// SigV4 as plugins/cloudflare/sigv4.cpp computes it, against AWS's published examples for S3
// ("Examples: Signature Calculations in AWS Signature Version 4", bucket examplebucket, key pair
// AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 20130524, us-east-1): the
// GET object, PUT object and list objects cases, whose signatures AWS gives. Any mistake in the
// canonical request, the string to sign or the key chain changes the signature.
#include <gtest/gtest.h>

#include "plugins/cloudflare/sigv4.hpp"

namespace orgd::cloudflare::sigv4 {
namespace {

const Secret kSecret = Secret::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
constexpr const char* kAccessKey = "AKIAIOSFODNN7EXAMPLE";

Request example(std::string method, std::string path) {
  Request r;
  r.method = std::move(method);
  r.encoded_path = std::move(path);
  r.host = "examplebucket.s3.amazonaws.com";
  r.amz_date = "20130524T000000Z";
  r.region = "us-east-1";
  return r;
}

TEST(R2Sigv4, GetObjectExampleMatchesAwsSignature) {
  Request r = example("GET", "/test.txt");
  r.headers = {{"Range", "bytes=0-9"}};
  const Signature s = sign(r, kAccessKey, kSecret);
  EXPECT_EQ(s.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.signature_hex(), "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(std::string{s.authorization.expose()},
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(R2Sigv4, PutObjectExampleEncodesThePathOnce) {
  const std::string body = "Welcome to Amazon S3.";
  Request r = example("PUT", "/" + uri_encode("test$file.text", true));
  EXPECT_EQ(r.encoded_path, "/test%24file.text");
  r.payload_sha256 = sha256_hex(body);
  EXPECT_EQ(r.payload_sha256, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  // Out of order and with a stray space on purpose: names are sorted, values trimmed.
  r.headers = {{"x-amz-storage-class", "REDUCED_REDUNDANCY "},
               {"Date", "Fri, 24 May 2013 00:00:00 GMT"}};
  const Signature s = sign(r, kAccessKey, kSecret);
  EXPECT_EQ(s.signed_headers, "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
  EXPECT_EQ(s.signature_hex(), "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(R2Sigv4, ListObjectsExampleSortsTheQuery) {
  Request r = example("GET", "/");
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};
  const Signature s = sign(r, kAccessKey, kSecret);
  EXPECT_NE(s.canonical_request.find("\n/\nmax-keys=2&prefix=J\n"), std::string::npos);
  EXPECT_EQ(s.signature_hex(), "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(R2Sigv4, AnyChangeChangesTheSignature) {
  const std::string base = sign(example("GET", "/test.txt"), kAccessKey, kSecret).signature_hex();
  Request other_date = example("GET", "/test.txt");
  other_date.amz_date = "20130525T000000Z";
  EXPECT_NE(sign(other_date, kAccessKey, kSecret).signature_hex(), base);
  Request other_region = example("GET", "/test.txt");
  other_region.region = "auto";
  EXPECT_NE(sign(other_region, kAccessKey, kSecret).signature_hex(), base);
  EXPECT_NE(sign(example("GET", "/test.txt"), kAccessKey, Secret::from("x")).signature_hex(), base);
  EXPECT_NE(sign(example("GET", "/test.txT"), kAccessKey, kSecret).signature_hex(), base);
}

TEST(R2Sigv4, EncodingRules) {
  EXPECT_EQ(uri_encode("a b/c~d-e_f.g", true), "a%20b/c~d-e_f.g");
  EXPECT_EQ(uri_encode("a b/c", false), "a%20b%2Fc");
  EXPECT_EQ(uri_encode("ü+=", false), "%C3%BC%2B%3D");
  // Values are encoded ('/' and '=' too), names sorted after encoding, an empty value kept.
  EXPECT_EQ(canonical_query({{"list-type", "2"}, {"continuation-token", "a/b=="}, {"acl", ""}}),
            "acl=&continuation-token=a%2Fb%3D%3D&list-type=2");
}

}  // namespace
}  // namespace orgd::cloudflare::sigv4
