// orgd's NatsConnection against a real nats-server in decentralized (operator / JWT) mode: an
// operator, an account and a user made here with orgd's own nkeys code, the account preloaded
// into the server's memory resolver. A creds file and a JWT + seed given directly both connect;
// a user of an unknown account and the right JWT with the wrong seed are refused.
#include <gtest/gtest.h>
#include <sodium.h>

#include <array>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/nkeys.hpp"
#include "tests/support/nats_auth.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using nkeys::KeyType;
using testing::NatsServer;

using testing::auth_settings;
using testing::connects;
using testing::server_with_config;

// A fresh random nkey seed of the given type.
std::string new_seed(KeyType type) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialized");
  std::array<unsigned char, nkeys::kEd25519SeedSize> raw{};
  randombytes_buf(raw.data(), raw.size());
  std::string seed = nkeys::encode_seed(type, raw);
  sodium_memzero(raw.data(), raw.size());
  return seed;
}

std::string base64url(const unsigned char* data, std::size_t size) {
  constexpr int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_encoded_len(size, variant), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, variant);
  out.resize(out.find('\0'));
  return out;
}

std::string base64url(const std::string& text) {
  return base64url(reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

// A signed NATS JWT: `nats` is the JSON object of the claim type. The jti is derived the way the
// NATS tools do it: base32 of the sha256 of the claims serialized with an empty jti.
std::string make_jwt(const std::string& issuer_seed, const std::string& subject,
                     const std::string& name, const std::string& nats) {
  const long long iat = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  auto claims = [&](const std::string& jti) {
    return "{\"jti\":\"" + jti + "\",\"iat\":" + std::to_string(iat) + ",\"iss\":\"" +
           nkeys::public_key_from_seed(issuer_seed) + "\",\"name\":\"" + name + "\",\"sub\":\"" +
           subject + "\",\"nats\":" + nats + "}";
  };
  const std::string unsigned_claims = claims("");
  std::array<unsigned char, crypto_hash_sha256_BYTES> hash{};
  crypto_hash_sha256(hash.data(), reinterpret_cast<const unsigned char*>(unsigned_claims.data()),
                     unsigned_claims.size());
  const std::string jti = nkeys::base32_encode(hash);

  const std::string signing_input =
      base64url(std::string(R"({"typ":"JWT","alg":"ed25519-nkey"})")) + "." +
      base64url(claims(jti));
  const std::vector<unsigned char> sig = nkeys::sign(issuer_seed, signing_input);
  return signing_input + "." + base64url(sig.data(), sig.size());
}

std::string operator_jwt(const std::string& operator_seed) {
  return make_jwt(operator_seed, nkeys::public_key_from_seed(operator_seed), "orgd-test-operator",
                  R"({"type":"operator","version":2})");
}

std::string account_jwt(const std::string& operator_seed, const std::string& account_seed) {
  return make_jwt(operator_seed, nkeys::public_key_from_seed(account_seed), "orgd-test-account",
                  R"({"type":"account","version":2,"limits":{"subs":-1,"data":-1,"payload":-1,)"
                  R"("imports":-1,"exports":-1,"wildcards":true,"conn":-1,"leaf":-1}})");
}

std::string user_jwt(const std::string& account_seed, const std::string& user_seed) {
  return make_jwt(account_seed, nkeys::public_key_from_seed(user_seed), "orgd-test-user",
                  R"({"type":"user","version":2,"pub":{},"sub":{},"subs":-1,"data":-1,)"
                  R"("payload":-1})");
}

std::string creds_text(const std::string& jwt, const std::string& seed) {
  return "-----BEGIN NATS USER JWT-----\n" + jwt +
         "\n------END NATS USER JWT------\n\n"
         "************************* IMPORTANT *************************\n"
         "NKEY Seed printed below can be used to sign and prove identity.\n"
         "NKEYs are sensitive and should be treated as secrets.\n\n"
         "-----BEGIN USER NKEY SEED-----\n" +
         seed + "\n------END USER NKEY SEED------\n";
}

// An operator, one account it signed (preloaded into a memory resolver) and a user of it.
struct Trust {
  std::string operator_seed = new_seed(KeyType::operator_);
  std::string account_seed = new_seed(KeyType::account);
  std::string user_seed = new_seed(KeyType::user);
  std::string user = user_jwt(account_seed, user_seed);

  std::string server_config() const {
    return "operator: \"" + operator_jwt(operator_seed) +
           "\"\n"
           "resolver: MEMORY\n"
           "resolver_preload: {\n  " +
           nkeys::public_key_from_seed(account_seed) + ": \"" +
           account_jwt(operator_seed, account_seed) + "\"\n}\n";
  }
};

// The server logs every refused connect of this test's client as an authentication error
// (written before the client is told), so a refusal for any other reason shows up.
bool server_refused_auth(const NatsServer& server) {
  return server.log_text().find(":orgd-auth-test\" - authentication error") !=
         std::string::npos;
}

// Connects with `settings`; on failure shows why, with the server's log.
void expect_connects(const NatsConnectionSettings& settings, const NatsServer& server) {
  bool ok = false;
  try {
    ok = connects(settings);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what() << "\nnats-server log:\n" << server.log_text();
  }
  EXPECT_TRUE(ok) << server.log_text();
}

TEST(NatsJwtAuth, CredsFile) {
  Trust trust;
  NatsServer server(server_with_config(trust.server_config()));
  testing::TempDir dir{"orgd-jwt"};
  const auto creds = dir / "user.creds";
  testing::write_file(creds, creds_text(trust.user, trust.user_seed));

  auto good = auth_settings(server.url());
  good.creds_file = creds.string();
  expect_connects(good, server);
}

TEST(NatsJwtAuth, JwtAndSeed) {
  Trust trust;
  NatsServer server(server_with_config(trust.server_config()));
  auto good = auth_settings(server.url());
  good.jwt = Secret::from(trust.user);
  good.jwt_seed = Secret::from(trust.user_seed);
  expect_connects(good, server);
}

TEST(NatsJwtAuth, UserOfUnknownAccountIsRefused) {
  Trust trust;
  NatsServer server(server_with_config(trust.server_config()));
  // Same operator, but an account the server was never given.
  const std::string stranger_account = new_seed(KeyType::account);
  const std::string user_seed = new_seed(KeyType::user);
  auto bad = auth_settings(server.url());
  bad.jwt = Secret::from(user_jwt(stranger_account, user_seed));
  bad.jwt_seed = Secret::from(user_seed);
  EXPECT_THROW(connects(bad), std::runtime_error) << server.log_text();
  EXPECT_TRUE(server_refused_auth(server)) << server.log_text();

  // The same through a creds file.
  testing::TempDir dir{"orgd-jwt"};
  const auto creds = dir / "stranger.creds";
  testing::write_file(creds, creds_text(std::string(bad.jwt.expose()), user_seed));
  auto bad_file = auth_settings(server.url());
  bad_file.creds_file = creds.string();
  EXPECT_THROW(connects(bad_file), std::runtime_error) << server.log_text();
}

TEST(NatsJwtAuth, RightJwtWithWrongSeedIsRefused) {
  Trust trust;
  NatsServer server(server_with_config(trust.server_config()));
  auto bad = auth_settings(server.url());
  bad.jwt = Secret::from(trust.user);
  bad.jwt_seed = Secret::from(new_seed(KeyType::user));
  EXPECT_THROW(connects(bad), std::runtime_error) << server.log_text();
  EXPECT_TRUE(server_refused_auth(server)) << server.log_text();
}

}  // namespace
}  // namespace orgd
