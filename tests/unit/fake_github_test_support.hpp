#pragma once

// What the fake GitHub's unit tests share: requests built like a client's, answers read back,
// a clock the test moves, and sealed boxes and JWTs made the way a real client makes them
// (libsodium, OpenSSL), never by the fake itself.

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/fakes/fake_github.hpp"

namespace orgd::testing::fake_github_test {

using json = nlohmann::json;
using namespace std::chrono_literals;

inline const char* kToken = "ghp_unitTestToken0123456789abcdefABCDEF";

// Moved by hand; the fake reads it through Options::clock.
struct TestClock {
  std::chrono::system_clock::time_point now =
      std::chrono::system_clock::from_time_t(1'796'000'000);  // 2026-11-30
  FakeGithub::Clock fn() {
    return [this] { return now; };
  }
  std::int64_t seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  }
};

inline std::string iso8601_for_test(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline FakeRequest request(const std::string& method, const std::string& target,
                           const std::string& body = "",
                           const std::string& authorization = std::string("Bearer ") + kToken) {
  FakeRequest r;
  r.method = method;
  r.target = target;
  auto q = target.find('?');
  r.path = target.substr(0, q);
  r.query = q == std::string::npos ? "" : target.substr(q + 1);
  r.headers.push_back({"Host", "api.github.test"});
  r.headers.push_back({"Accept", "application/vnd.github+json"});
  if (!authorization.empty()) r.headers.push_back({"Authorization", authorization});
  r.body = body;
  return r;
}

inline std::string header(const FakeResponse& r, std::string_view name) {
  FakeRequest tmp;
  tmp.headers = r.headers;
  return tmp.header(name);
}

inline json body(const FakeResponse& r) {
  return r.body.empty() ? json() : json::parse(r.body);
}

inline std::string b64(const std::string& bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

inline std::string unb64(const std::string& text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    return "";
  }
  out.resize(len);
  return out;
}

// crypto_box_seal of `value` to a raw 32-byte public key, base64 as GitHub takes it.
inline std::string seal(const std::string& public_key, const std::string& value) {
  std::string sealed(crypto_box_SEALBYTES + value.size(), '\0');
  crypto_box_seal(reinterpret_cast<unsigned char*>(sealed.data()),
                  reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                  reinterpret_cast<const unsigned char*>(public_key.data()));
  return b64(sealed);
}

inline std::string b64url(const std::string& bytes) {
  std::string out(
      sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

// An RS256 JWT signed with the PEM private key, as a GitHub App client makes it.
inline std::string make_jwt(const std::string& private_pem, const json& claims,
                            const json& header_json = json{{"alg", "RS256"}, {"typ", "JWT"}}) {
  const std::string signing = b64url(header_json.dump()) + "." + b64url(claims.dump());
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(private_pem.data(), static_cast<int>(private_pem.size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EXPECT_TRUE(key);
  std::size_t len = 0;
  EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get());
  EVP_DigestSign(ctx.get(), nullptr, &len,
                 reinterpret_cast<const unsigned char*>(signing.data()), signing.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(signing.data()), signing.size());
  sig.resize(len);
  return signing + "." + b64url(sig);
}

// A fake with the test's token and clock.
struct FakeGithubTest : ::testing::Test {
  TestClock clock;
  std::unique_ptr<FakeGithub> github;
  void SetUp() override {
    if (sodium_init() < 0) FAIL() << "libsodium";
    FakeGithub::Options options;
    options.clock = clock.fn();
    github = std::make_unique<FakeGithub>(options);
    github->add_token(kToken);
  }
  FakeResponse call(const std::string& method, const std::string& target,
                    const std::string& body_text = "") {
    return github->handle(request(method, target, body_text));
  }
  FakeResponse call(const std::string& method, const std::string& target, const json& j) {
    return github->handle(request(method, target, j.dump()));
  }
  // PUT a secret sealed to the scope's current key (fetched as a client would).
  FakeResponse put_secret(const std::string& base, const std::string& name,
                          const std::string& value, json extra = json::object()) {
    json key = body(call("GET", base + "/public-key"));
    extra["encrypted_value"] = seal(unb64(key["key"].get<std::string>()), value);
    extra["key_id"] = key["key_id"];
    return call("PUT", base + "/" + name, extra);
  }
};

}  // namespace orgd::testing::fake_github_test
