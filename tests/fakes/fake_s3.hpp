#pragma once

// An in-memory S3 API as R2 serves it (cloud-apis.md §2.6), for tests: path-style requests
// (/<bucket>/<key>), PutObject, GetObject, DeleteObject (204 whether or not the key was there,
// as S3 answers), ListObjectsV2 (list-type=2: prefix, max-keys capped at the fake's page size,
// continuation tokens that only the fake issues), errors as S3's XML document with its codes
// (NoSuchBucket, NoSuchKey 404; SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied,
// RequestTimeTooSkewed 403; AuthorizationHeaderMalformed, XAmzContentSHA256Mismatch 400;
// SlowDown 503 on demand), and a record of every call.
//
// Every request must carry a valid SigV4 signature (service s3, region auto, us-east-1 or
// empty accepted as R2 does) under a key pair the fake knows: by default the ones R2 derives
// from a FakeCloudflare token (connect_r2()). The verifier is written here, apart from the
// client's signer (plugins/cloudflare/sigv4.cpp), with its own canonicalization from what came
// over the wire, so a client mistake cannot be mirrored into a pass.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/fake_cloudflare.hpp"
#include "tests/fakes/http_server.hpp"

namespace orgd::testing {

struct S3Call {
  std::string method, path, query;
  std::vector<orgd::HttpHeader> headers;
  std::string body;
  int status = 0;
  std::string code;  // the S3 error code answered ("" on success)
  std::string header(std::string_view name) const;
};

class FakeS3 {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  // The secret access key of an access key id; nullopt when the id is unknown.
  using KeyLookup = std::function<std::optional<std::string>(const std::string& access_key_id)>;
  struct Options {
    Clock clock;                        // unset: the system clock
    int page_size = 1000;               // the most keys a ListObjectsV2 page holds (S3: 1,000)
    std::chrono::minutes max_skew{15};  // x-amz-date this far from now is refused
  };

  explicit FakeS3(Options options);
  FakeS3();
  ~FakeS3();
  FakeS3(const FakeS3&) = delete;
  FakeS3& operator=(const FakeS3&) = delete;

  FakeResponse handle(const FakeRequest& request);
  FakeHttpServer::Handler handler();

  void set_key_lookup(KeyLookup lookup);
  // A key pair besides the lookup's.
  void add_key(std::string access_key_id, std::string secret_access_key);
  // Returns whether the bucket is new.
  bool add_bucket(const std::string& name, const std::string& jurisdiction = "default");
  bool has_bucket(const std::string& name) const;
  // The bucket's objects (key → bytes).
  std::map<std::string, std::string> objects(const std::string& bucket) const;
  void put_object(const std::string& bucket, const std::string& key, std::string bytes);
  // Writes and deletes refused with 403 AccessDenied (a read-only token).
  void set_read_only(bool read_only);
  // The next `times` requests answered `status` with S3 error `code` (503 SlowDown, 500
  // InternalError …), before their signature is looked at.
  void fail_next(int times, int status, std::string code);

  std::vector<S3Call> calls() const;
  std::size_t count(const std::string& method) const;
  void clear_calls();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// FakeS3 behind a loopback FakeHttpServer; base_url() is the S3 endpoint (r2_url).
class FakeS3Server {
 public:
  explicit FakeS3Server(FakeS3::Options options = {}, FakeHttpServer::Options http = {});
  FakeS3& s3() { return s3_; }
  FakeHttpServer& http() { return server_; }
  std::string base_url() const { return server_.base_url(); }

 private:
  FakeS3 s3_;
  FakeHttpServer server_;
};

// R2 as one: buckets made through FakeCloudflare's bucket API are the fake S3's, and the S3
// key pairs are the ones Cloudflare derives from its tokens (access key id = the token's id,
// secret = SHA-256 hex of the token's value). Both fakes outlive their use.
void connect_r2(FakeCloudflare& cloudflare, FakeS3& s3);

// SHA-256 hex, the fake's own (tests derive expected keys with it).
std::string fake_sha256_hex(std::string_view bytes);

}  // namespace orgd::testing
