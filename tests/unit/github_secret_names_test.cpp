// Actions secret names and values checked before any call, and values sealed to GitHub's public
// key: opened here with the private key, as GitHub would.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sodium.h>

#include <string>

#include "plugins/github/secret_names.hpp"

namespace orgd::github {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(GithubSecretNamesTest, NormalisedToUpperCase) {
  auto name = normalize_secret_name("database_url");
  ASSERT_TRUE(name) << name.error().message;
  EXPECT_EQ(name.value(), "DATABASE_URL");
  EXPECT_EQ(normalize_secret_name("_x9").value(), "_X9");
  EXPECT_EQ(normalize_secret_name("GitHubby").value(), "GITHUBBY");
}

TEST(GithubSecretNamesTest, RefusedNamesSayWhyAndAreNamed) {
  struct Case {
    std::string name;
    std::string why;
  };
  for (const Case& c :
       {Case{"", "must not be empty"}, Case{"MY-SECRET", "only letters, digits and _"},
        Case{"WITH SPACE", "only letters, digits and _"},
        Case{"DOT.TED", "only letters, digits and _"}, Case{"ÜBER", "only letters, digits and _"},
        Case{"1PASSWORD", "must not start with a digit"},
        Case{"GITHUB_TOKEN", "reserved by GitHub"}, Case{"github_sha", "reserved by GitHub"}}) {
    auto result = normalize_secret_name(c.name);
    ASSERT_FALSE(result) << c.name;
    EXPECT_EQ(result.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(result.error().retry, Retry::permanent);
    EXPECT_THAT(result.error().message, HasSubstr(c.why)) << c.name;
    if (!c.name.empty() && c.name != "ÜBER") {
      EXPECT_THAT(result.error().message, HasSubstr("\"" + c.name + "\""));
    }
  }
  // Bytes that are not printable are escaped, never written raw into the message.
  auto odd = normalize_secret_name(std::string("A\nB", 3));
  ASSERT_FALSE(odd);
  EXPECT_THAT(odd.error().message, HasSubstr("A\\x0aB"));
}

TEST(GithubSecretNamesTest, ValueLimitIs48000BytesAndNeverQuotesTheValue) {
  const std::string at_limit(kMaxSecretValueBytes, 'v');
  EXPECT_TRUE(check_secret_value("BIG", Secret::from(at_limit)));
  const std::string canary = "canary-" + std::string(kMaxSecretValueBytes, 'z');
  auto over = check_secret_value("BIG", Secret::from(canary));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().retry, Retry::permanent);
  EXPECT_THAT(over.error().message, HasSubstr("\"BIG\""));
  EXPECT_THAT(over.error().message, HasSubstr("48007 bytes"));
  EXPECT_THAT(over.error().message, HasSubstr("48000"));
  EXPECT_THAT(over.error().message, Not(HasSubstr("canary")));
  auto empty = check_secret_value("E", Secret{});
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty.error().message, HasSubstr("empty"));
}

std::string base64(const unsigned char* bytes, std::size_t size) {
  std::string out(sodium_base64_encoded_len(size, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes, size, sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);
  return out;
}

TEST(GithubSealTest, SealedValueOpensWithThePrivateKey) {
  ASSERT_GE(sodium_init(), 0);
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  unsigned char sk[crypto_box_SECRETKEYBYTES];
  crypto_box_keypair(pk, sk);
  const std::string value = "postgres://u:p@db/prod";
  auto sealed = seal_for_github(base64(pk, sizeof pk), Secret::from(value));
  ASSERT_TRUE(sealed) << sealed.error().message;

  std::string box(sealed.value().size(), '\0');
  std::size_t box_size = 0;
  ASSERT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(box.data()), box.size(),
                              sealed.value().data(), sealed.value().size(), nullptr, &box_size,
                              nullptr, sodium_base64_VARIANT_ORIGINAL),
            0);
  ASSERT_EQ(box_size, value.size() + crypto_box_SEALBYTES);
  std::string opened(value.size(), '\0');
  ASSERT_EQ(
      crypto_box_seal_open(reinterpret_cast<unsigned char*>(opened.data()),
                           reinterpret_cast<const unsigned char*>(box.data()), box_size, pk, sk),
      0);
  EXPECT_EQ(opened, value);

  // Sealing is randomised: the same value never gives the same box twice.
  auto again = seal_for_github(base64(pk, sizeof pk), Secret::from(value));
  ASSERT_TRUE(again);
  EXPECT_NE(again.value(), sealed.value());
}

TEST(GithubSealTest, BadPublicKeysRefused) {
  unsigned char short_key[16] = {};
  for (const std::string key :
       {std::string(), std::string("not base64!"), base64(short_key, sizeof short_key)}) {
    auto sealed = seal_for_github(key, Secret::from("v"));
    ASSERT_FALSE(sealed) << key;
    EXPECT_EQ(sealed.error().retry, Retry::permanent);
    EXPECT_THAT(sealed.error().message, HasSubstr("public key"));
  }
}

}  // namespace
}  // namespace orgd::github
