// Secret values: kept out of anything that prints, moved not copied, wiped on release, and
// sealed with libsodium's crypto_box_seal so that only the key's holder opens them.
#include <gtest/gtest.h>
#include <sodium.h>

#include <sstream>
#include <string>
#include <type_traits>

#include "daemon/core/secret.hpp"

namespace orgd {
namespace {

constexpr const char* kCanary = "CANARY-secret-7f3a91";

static_assert(!std::is_copy_constructible_v<Secret>);
static_assert(!std::is_copy_assignable_v<Secret>);
static_assert(std::is_nothrow_move_constructible_v<Secret>);
static_assert(!std::is_convertible_v<Secret, std::string>);
static_assert(!std::is_convertible_v<Secret, std::string_view>);

TEST(SecretTest, PrintsAsStarsThroughFmtAndStreams) {
  const Secret secret = Secret::from(kCanary);
  const std::string formatted = fmt::format("token {} and {:>5}", secret, secret);
  EXPECT_EQ(formatted.find(kCanary), std::string::npos) << formatted;
  EXPECT_EQ(formatted, "token *** and   ***");
  std::ostringstream out;
  out << "token " << secret;
  EXPECT_EQ(out.str(), "token ***");
  // The bytes are there for the call that needs them.
  EXPECT_EQ(secret.expose(), kCanary);
  EXPECT_EQ(secret.size(), std::string(kCanary).size());
}

TEST(SecretTest, TakeWipesTheStringItCameFrom) {
  std::string source = kCanary;
  const Secret secret = Secret::take(std::move(source));
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): take() empties it on purpose
  EXPECT_EQ(secret.expose(), kCanary);
}

TEST(SecretTest, MovesLeaveTheSourceEmptyAndClonesAreEqual) {
  Secret a = Secret::from(kCanary);
  Secret b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.expose(), kCanary);
  Secret c = b.clone();
  EXPECT_TRUE(c.equals(b));
  EXPECT_FALSE(c.equals(Secret::from("CANARY-secret-7f3a92")));
  EXPECT_FALSE(c.equals(Secret::from("short")));
  c = Secret::from("other");
  EXPECT_EQ(c.expose(), "other");
  c.clear();
  EXPECT_TRUE(c.empty());
  EXPECT_TRUE(Secret{}.equals(Secret::from("")));
}

TEST(SecretTest, ASealedValueOpensOnlyWithTheKeysHolder) {
  ASSERT_GE(sodium_init(), 0);
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  unsigned char sk[crypto_box_SECRETKEYBYTES];
  crypto_box_keypair(pk, sk);
  const std::string public_key(reinterpret_cast<const char*>(pk), sizeof pk);
  const Secret value = Secret::from(kCanary);

  auto sealed = seal_to(public_key, value);
  ASSERT_TRUE(sealed) << sealed.error().message;
  EXPECT_EQ(sealed.value().find(kCanary), std::string::npos);
  ASSERT_EQ(sealed.value().size(), crypto_box_SEALBYTES + value.size());
  std::string opened(value.size(), '\0');
  ASSERT_EQ(crypto_box_seal_open(reinterpret_cast<unsigned char*>(opened.data()),
                                 reinterpret_cast<const unsigned char*>(sealed.value().data()),
                                 sealed.value().size(), pk, sk),
            0);
  EXPECT_EQ(opened, kCanary);
  // Sealed twice, two different boxes (an ephemeral key each time).
  EXPECT_NE(seal_to(public_key, value).value(), sealed.value());

  // Another key pair cannot open it.
  unsigned char other_pk[crypto_box_PUBLICKEYBYTES];
  unsigned char other_sk[crypto_box_SECRETKEYBYTES];
  crypto_box_keypair(other_pk, other_sk);
  EXPECT_NE(crypto_box_seal_open(reinterpret_cast<unsigned char*>(opened.data()),
                                 reinterpret_cast<const unsigned char*>(sealed.value().data()),
                                 sealed.value().size(), other_pk, other_sk),
            0);
}

TEST(SecretTest, ASealingKeyOfTheWrongSizeIsRefused) {
  auto sealed = seal_to("too short", Secret::from(kCanary));
  ASSERT_FALSE(sealed);
  EXPECT_EQ(sealed.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(sealed.error().message, "a sealing key is 32 bytes, got 9");
}

}  // namespace
}  // namespace orgd
