#include <gtest/gtest.h>

#include "daemon/core/config_values.hpp"

namespace orgd {
namespace {

TEST(RedactUrls, HidesUserInformationOnly) {
  EXPECT_EQ(redact_urls({"nats://127.0.0.1:4222"}), "nats://127.0.0.1:4222");
  EXPECT_EQ(redact_urls({"nats://orgd:s3cret-canary@nats-1:4222", "tls://tok@nats-2:4222"}),
            "nats://***@nats-1:4222,tls://***@nats-2:4222");
  EXPECT_EQ(redact_urls({"orgd:pw@host:4222"}), "***@host:4222");
  // An '@' in a path is not user information.
  EXPECT_EQ(redact_urls({"ws://host:8080/a@b"}), "ws://host:8080/a@b");
}

}  // namespace
}  // namespace orgd
