#include "daemon/bus/nkeys.hpp"

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace orgd::nkeys {
namespace {

// The user key pair of the NATS documentation (also used by nats.c's and other clients' tests).
constexpr const char* kDocSeed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
constexpr const char* kDocPublic = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

std::vector<unsigned char> bytes(std::string_view s) { return {s.begin(), s.end()}; }

// nats.c's own signature of `data`, the reference our sign() must match byte for byte.
std::vector<unsigned char> nats_c_sign(const std::string& seed, const std::string& data) {
  unsigned char* sig = nullptr;
  int len = 0;
  EXPECT_EQ(nats_Open(-1), NATS_OK);
  EXPECT_EQ(nats_Sign(seed.c_str(), data.c_str(), &sig, &len), NATS_OK)
      << nats_GetLastError(nullptr);
  std::vector<unsigned char> out(sig, sig + len);
  free(sig);
  return out;
}

TEST(Base32, Rfc4648VectorsWithoutPadding) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "MY"},
      {"fo", "MZXQ"},
      {"foo", "MZXW6"},
      {"foob", "MZXW6YQ"},
      {"fooba", "MZXW6YTB"},
      {"foobar", "MZXW6YTBOI"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base32_encode(bytes(plain)), encoded) << plain;
    EXPECT_EQ(base32_decode(encoded), bytes(plain)) << encoded;
  }
}

TEST(Base32, RejectsBadInput) {
  EXPECT_THROW(base32_decode("MZXW6a"), std::invalid_argument);    // lower case
  EXPECT_THROW(base32_decode("MZ1W"), std::invalid_argument);      // '1' is not in the alphabet
  EXPECT_THROW(base32_decode("MZX"), std::invalid_argument);       // impossible length
  EXPECT_THROW(base32_decode("MZXW6==="), std::invalid_argument);  // nkeys never pad
}

TEST(Crc16, XmodemCheckValue) {
  EXPECT_EQ(crc16(bytes("123456789")), 0x31C3);
  EXPECT_EQ(crc16(bytes("")), 0);
}

TEST(Nkeys, PublicKeyOfTheDocumentedSeed) {
  EXPECT_EQ(public_key_from_seed(kDocSeed), kDocPublic);
  EXPECT_EQ(seed_type(kDocSeed), KeyType::user);
}

TEST(Nkeys, SignMatchesNatsC) {
  // (nats_Sign refuses empty input: server nonces never are.)
  for (const std::string nonce : {"DhXdTMAeiHhLDig", "x", "a much longer nonce with spaces"}) {
    const auto ours = sign(kDocSeed, nonce);
    ASSERT_EQ(ours.size(), kEd25519SignatureSize);
    EXPECT_EQ(ours, nats_c_sign(kDocSeed, nonce)) << nonce;
    EXPECT_TRUE(verify(kDocPublic, nonce, ours));
  }
}

TEST(Nkeys, SignMatchesPublishedSignature) {
  // From the nats.dart nkeys tests: the documented seed signing this nonce.
  const std::string expected_b64 =
      "WosANJXgeyxerXFo0twRiMG+/ZjYp1K/46bFeFax705yFTCTjM18jWl01gGYk4KKbadiHd+hP3WgUQ2iLZUAAA==";
  std::vector<unsigned char> expected(kEd25519SignatureSize);
  std::size_t length = 0;
  ASSERT_EQ(
      sodium_base642bin(expected.data(), expected.size(), expected_b64.data(), expected_b64.size(),
                        nullptr, &length, nullptr, sodium_base64_VARIANT_ORIGINAL),
      0);
  ASSERT_EQ(length, kEd25519SignatureSize);
  EXPECT_EQ(sign(kDocSeed, "DhXdTMAeiHhLDig"), expected);
}

TEST(Nkeys, GeneratedSeedsRoundTrip) {
  const std::string seed = create_user_seed();
  ASSERT_EQ(seed.size(), 58u);
  EXPECT_EQ(seed.substr(0, 2), "SU");
  EXPECT_EQ(seed_type(seed), KeyType::user);
  const std::string pub = public_key_from_seed(seed);
  ASSERT_EQ(pub.size(), 56u);
  EXPECT_EQ(pub[0], 'U');
  EXPECT_NE(create_user_seed(), seed);

  // Re-encoding the raw bytes gives the same text.
  const auto raw = base32_decode(seed);
  ASSERT_EQ(raw.size(), 36u);
  std::array<unsigned char, kEd25519SeedSize> raw_seed{};
  std::copy_n(raw.begin() + 2, raw_seed.size(), raw_seed.begin());
  EXPECT_EQ(encode_seed(KeyType::user, raw_seed), seed);

  const auto sig = sign(seed, "nonce");
  EXPECT_EQ(sig, nats_c_sign(seed, "nonce"));
  EXPECT_TRUE(verify(pub, "nonce", sig));
  EXPECT_FALSE(verify(pub, "other nonce", sig));
  EXPECT_FALSE(verify(kDocPublic, "nonce", sig));
}

TEST(Nkeys, OtherKeyTypesEncodeTheirPrefix) {
  std::array<unsigned char, kEd25519SeedSize> raw{};
  raw.fill(7);
  EXPECT_EQ(encode_seed(KeyType::account, raw).substr(0, 2), "SA");
  EXPECT_EQ(encode_seed(KeyType::operator_, raw).substr(0, 2), "SO");
  EXPECT_EQ(public_key_from_seed(encode_seed(KeyType::account, raw))[0], 'A');
  EXPECT_EQ(public_key_from_seed(encode_seed(KeyType::server, raw))[0], 'N');
}

TEST(Nkeys, InvalidSeedsThrowWithoutRevealingThem) {
  std::string corrupted = kDocSeed;
  corrupted[10] = corrupted[10] == 'A' ? 'B' : 'A';  // checksum mismatch
  const std::string cases[] = {
      corrupted,
      std::string(kDocSeed).substr(0, 40),  // truncated
      std::string(kDocSeed) + "AAAA",       // too long
      kDocPublic,                           // a public key is not a seed
      "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3V!",
      "",
  };
  for (const auto& bad : cases) {
    try {
      public_key_from_seed(bad);
      ADD_FAILURE() << "accepted an invalid seed (case length " << bad.size() << ")";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("nkey seed"), std::string::npos) << message;
      if (bad.size() >= 8) {
        EXPECT_EQ(message.find(bad.substr(0, 8)), std::string::npos) << message;
        EXPECT_EQ(message.find(bad.substr(bad.size() - 8)), std::string::npos) << message;
      }
    }
    EXPECT_THROW(sign(bad, "x"), std::invalid_argument);
  }
}

TEST(Nkeys, VerifyRejectsMalformedKeysAndSignatures) {
  const auto sig = sign(kDocSeed, "x");
  EXPECT_FALSE(verify("UNOTAKEY", "x", sig));
  EXPECT_FALSE(verify(kDocSeed, "x", sig));  // a seed is not a public key
  EXPECT_FALSE(verify(kDocPublic, "x", std::span(sig).first(10)));
}

class SeedFileTest : public ::testing::Test {
 protected:
  orgd::testing::TempDir dir_{"orgd-nkeys"};
};

TEST_F(SeedFileTest, PlainSeedFile) {
  orgd::testing::write_file(dir_ / "user.nk", std::string(kDocSeed) + "\n");
  EXPECT_EQ(read_seed_file(dir_ / "user.nk"), kDocSeed);
  orgd::testing::write_file(dir_ / "bare", std::string("  ") + kDocSeed + "\r\n\n");
  EXPECT_EQ(read_seed_file(dir_ / "bare"), kDocSeed);
}

TEST_F(SeedFileTest, CredsLikeFile) {
  const std::string creds =
      "-----BEGIN NATS USER JWT-----\n"
      "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n"
      "------END NATS USER JWT------\n"
      "\n"
      "************************* IMPORTANT *************************\n"
      "NKEY Seed printed below can be used to sign and prove identity.\n"
      "\n"
      "-----BEGIN USER NKEY SEED-----\n" +
      std::string(kDocSeed) +
      "\n"
      "------END USER NKEY SEED------\n";
  orgd::testing::write_file(dir_ / "user.creds", creds);
  EXPECT_EQ(read_seed_file(dir_ / "user.creds"), kDocSeed);
}

TEST_F(SeedFileTest, RejectsFilesWithoutAUserSeed) {
  std::array<unsigned char, kEd25519SeedSize> raw{};
  const std::string account_seed = encode_seed(KeyType::account, raw);
  orgd::testing::write_file(dir_ / "account.nk", account_seed + "\n");
  orgd::testing::write_file(dir_ / "empty.nk", "");
  std::string broken = kDocSeed;
  broken[20] = broken[20] == 'A' ? 'B' : 'A';
  orgd::testing::write_file(dir_ / "broken.nk", broken + "\n");

  for (const char* name : {"account.nk", "empty.nk", "broken.nk", "missing.nk"}) {
    try {
      read_seed_file(dir_ / name);
      ADD_FAILURE() << name << " accepted";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(name), std::string::npos) << message;
      EXPECT_EQ(message.find(account_seed.substr(2, 10)), std::string::npos) << message;
      EXPECT_EQ(message.find(broken.substr(2, 10)), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace orgd::nkeys
