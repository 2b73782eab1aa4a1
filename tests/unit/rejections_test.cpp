#include "daemon/events/rejections.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace orgd {
namespace {

using namespace std::chrono_literals;

class CapturingPublisher final : public Publisher {
 public:
  Result<Ok> publish(const BusMessage& m) override {
    sent.push_back(m);
    return Ok{};
  }
  std::vector<BusMessage> dead_letters() const {
    std::vector<BusMessage> out;
    for (const auto& m : sent) {
      if (m.subject.rfind("org.demo.dlq.", 0) == 0) out.push_back(m);
    }
    return out;
  }
  std::vector<BusMessage> sent;
};

class RejectionsTest : public ::testing::Test {
 protected:
  Rejections& make(DeadLetterLimits limits = {}) {
    rejections.emplace("org.demo", publisher, metrics, limits, &clock);
    return *rejections;
  }

  static BusMessage input(std::string subject, std::string data) {
    BusMessage m;
    m.subject = std::move(subject);
    m.data = std::move(data);
    return m;
  }

  void reject(const BusMessage& m, std::string_view kind = "health") {
    rejections->reject(m, invalid_argument("not a health report"), kind, Encoding::json);
  }

  double suppressed(const std::string& kind) {
    return metrics.counter("orgd_dead_letters_suppressed_total", "", {{"kind", kind}}).value();
  }

  CapturingPublisher publisher;
  MetricsRegistry metrics;
  ManualClock clock;
  std::optional<Rejections> rejections;
};

// Every header and the body of every message published, for canary searches.
bool appears_anywhere(const std::vector<BusMessage>& messages, const std::string& needle) {
  for (const auto& m : messages) {
    if (m.subject.find(needle) != std::string::npos) return true;
    if (m.data.find(needle) != std::string::npos) return true;
    for (const auto& [k, v] : m.headers) {
      if (k.find(needle) != std::string::npos || v.find(needle) != std::string::npos) return true;
    }
  }
  return false;
}

TEST_F(RejectionsTest, SmallBodyIsKeptWholeWithItsSizeAndHash) {
  make();
  reject(input("org.demo.health.api.http", "abc"));
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].subject, "org.demo.dlq.health.api.http");
  EXPECT_EQ(dead[0].data, "abc");
  EXPECT_EQ(dead[0].header(kDlqBodySizeHeader), "3");
  // FIPS 180-2's test vector for "abc".
  EXPECT_EQ(dead[0].header(kDlqBodySha256Header),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE(dead[0].header(kDlqBodyTruncatedHeader));
  EXPECT_EQ(dead[0].header(kDlqReasonHeader), "not a health report");
  EXPECT_EQ(dead[0].header(kDlqSubjectHeader), "org.demo.health.api.http");
  EXPECT_EQ(dead[0].header(kDlqCodeHeader), "400");
}

TEST_F(RejectionsTest, LargeBodyKeepsABoundedPrefixWithTheWholeBodysSizeAndHash) {
  make();
  // Near 1 MiB of garbage: a million 'a's, whose SHA-256 is FIPS 180-2's third test vector.
  const std::string body(1'000'000, 'a');
  reject(input("org.demo.health.api.http", body));
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].data, body.substr(0, 4096));
  EXPECT_EQ(dead[0].header(kDlqBodySizeHeader), "1000000");
  EXPECT_EQ(dead[0].header(kDlqBodySha256Header),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(dead[0].header(kDlqBodyTruncatedHeader), "true");
}

TEST_F(RejectionsTest, PrefixLengthIsTheConfiguredOne) {
  DeadLetterLimits limits;
  limits.body_prefix = 10;
  make(limits);
  reject(input("org.demo.health.api.http", "0123456789abcdef"));
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].data, "0123456789");
  EXPECT_EQ(dead[0].header(kDlqBodySizeHeader), "16");
}

TEST_F(RejectionsTest, OriginOverItsRateLimitIsCountedNotWritten) {
  DeadLetterLimits limits;
  limits.origin_burst = 3;
  limits.origin_rate = 1;
  make(limits);
  BusMessage flood = input("org.demo.health.api.http", "{}");
  flood.reply = "_INBOX.flood";
  for (int i = 0; i < 10; ++i) reject(flood);
  EXPECT_EQ(publisher.dead_letters().size(), 3u);
  EXPECT_EQ(suppressed("health"), 7);
  // Every sender still gets its error reply: only the JetStream writes are limited.
  EXPECT_EQ(publisher.sent.size() - publisher.dead_letters().size(), 10u);
  // And every rejection is counted as such.
  EXPECT_EQ(metrics
                .counter("orgd_messages_rejected_total", "",
                         {{"kind", "health"}, {"code", "invalid_argument"}})
                .value(),
            10);

  // Another origin has its own bucket.
  reject(input("org.demo.health.web.http", "{}"));
  EXPECT_EQ(publisher.dead_letters().size(), 4u);

  // The bucket refills with time: one second, one more dead letter.
  clock.advance(1s);
  reject(flood);
  reject(flood);
  EXPECT_EQ(publisher.dead_letters().size(), 5u);
  EXPECT_EQ(suppressed("health"), 8);
}

// Subjects are the sender's to choose: a flood over many origins is bounded by its kind, and
// leaves the other kinds' dead letters alone.
TEST_F(RejectionsTest, FloodOverManyOriginsIsBoundedByItsKind) {
  DeadLetterLimits limits;
  limits.kind_burst = 5;
  limits.kind_rate = 1;
  limits.max_origins = 8;
  make(limits);
  for (int i = 0; i < 100; ++i) {
    reject(input("org.demo.health.r" + std::to_string(i) + ".s", "{}"));
  }
  EXPECT_EQ(publisher.dead_letters().size(), 5u);
  EXPECT_EQ(suppressed("health"), 95);

  reject(input("org.demo.cmd.deploy", "{}"), "cmd");
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 6u);
  EXPECT_EQ(dead.back().subject, "org.demo.dlq.cmd.deploy");
  EXPECT_EQ(suppressed("cmd"), 0);
}

TEST_F(RejectionsTest, CredentialHeadersDoNotReachTheDlq) {
  make();
  const std::string canary = "CANARY-7f3a9c";
  BusMessage m = input("org.demo.api.deploy", "{}");
  m.reply = "_INBOX.1";
  m.headers = {{"Authorization", "Bearer " + canary},
               {"authorization", canary},
               {"Proxy-Authorization", "Basic " + canary},
               {"Cookie", "session=" + canary},
               {"X-Api-Key", canary},
               {"X_API_KEY", canary},
               {"GitHub-Token", canary},
               {"X-Deploy-Secret", canary},
               {"X-Nats-Password", canary},
               {"Nats-Jwt", canary},
               {"X-Hub-Signature-256", "sha256=" + canary},
               {"X-Forwarded-Thing", "bearer " + canary},  // a credential by its value
               {"X-Request-Id", "req-42"},
               {"Content-Type", "application/json"}};
  rejections->reject(m, invalid_argument("bad deploy request"), "api", Encoding::json);
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_FALSE(appears_anywhere(publisher.sent, canary));
  // Harmless headers are kept: they help find where the input came from.
  EXPECT_EQ(dead[0].header("X-Request-Id"), "req-42");
  EXPECT_EQ(dead[0].header("Content-Type"), "application/json");
}

TEST_F(RejectionsTest, CredentialHeaderNames) {
  for (const char* name :
       {"Authorization", "PROXY-AUTHORIZATION", "Cookie", "Set-Cookie", "X-Auth-Token",
        "x-access-token", "Private-Token", "X-Secret", "Client-Secret", "X-Api-Key", "apikey",
        "nats_password", "X-Session", "X-Hub-Signature-256", "Nkey-Seed", "X-JWT"}) {
    EXPECT_TRUE(credential_header(name)) << name;
  }
  for (const char* name :
       {"Content-Type", "X-Request-Id", "X-GitHub-Event", "Nats-Msg-Id", "User-Agent", "Accept"}) {
    EXPECT_FALSE(credential_header(name)) << name;
  }
}

TEST_F(RejectionsTest, SecretsOriginsKeepNoBodyAndNoHash) {
  make();
  const std::string canary = "CANARY-secret-value-5d1e";
  for (const char* subject :
       {"org.demo.api.secrets.set", "org.demo.cmd.secrets.sync", "org.demo.api.secrets.rotate"}) {
    BusMessage m = input(subject, R"({"name":"DB_PASSWORD","value":")" + canary + "\"}");
    rejections->reject(m, invalid_argument("value must be sealed"), "api", Encoding::json);
  }
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 3u);
  for (const auto& d : dead) {
    EXPECT_TRUE(d.data.empty()) << d.subject;
    EXPECT_FALSE(d.header(kDlqBodySha256Header)) << d.subject;
    EXPECT_EQ(d.header(kDlqBodyOmittedHeader), "secrets") << d.subject;
    EXPECT_EQ(d.header(kDlqReasonHeader), "value must be sealed") << d.subject;
  }
  EXPECT_FALSE(appears_anywhere(publisher.sent, canary));
}

TEST_F(RejectionsTest, HeadersAreBoundedInNumberAndSize) {
  make();
  BusMessage m = input("org.demo.health.api.http", "{}");
  for (int i = 0; i < 100; ++i) m.headers.emplace_back("X-H" + std::to_string(i), "v");
  m.headers.insert(m.headers.begin(), {"X-Big", std::string(10'000, 'b')});
  m.headers.insert(m.headers.begin(), {std::string(200, 'N'), "long name"});
  reject(m);
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  std::size_t copied = 0;
  for (const auto& [k, v] : dead[0].headers) {
    if (k.rfind("Orgd-Dlq-", 0) != 0) ++copied;
    EXPECT_LE(v.size(), 600u) << k;
    EXPECT_LE(k.size(), 64u);
  }
  EXPECT_EQ(copied, 16u);
  EXPECT_EQ(dead[0].header("X-Big")->size(), 256u);
}

// orgd answers with its own permissions: a sender must not aim its error replies at orgd's
// streams or at the JetStream API.
TEST_F(RejectionsTest, ErrorRepliesAreNotSentToOrgdsOwnOrSystemSubjects) {
  make();
  for (const char* reply :
       {"org.demo.cmd.deploy", "org.demo.events.deploy.x.finished", "org.demo.dlq.health",
        "$JS.API.STREAM.PURGE.ORGD_DLQ", "$KV.orgd_locks.api", "_INBOX.*"}) {
    BusMessage m = input("org.demo.api.deploy", "{}");
    m.reply = reply;
    rejections->reject(m, invalid_argument("bad"), "api", Encoding::json);
  }
  for (const auto& m : publisher.sent) {
    EXPECT_EQ(m.subject, "org.demo.dlq.api.deploy") << "published on " << m.subject;
  }
  EXPECT_EQ(publisher.dead_letters().size(), 6u);
  EXPECT_EQ(metrics.counter("orgd_error_replies_refused_total", "", {{"kind", "api"}}).value(), 6);

  BusMessage ok = input("org.demo.api.deploy", "{}");
  ok.reply = "_INBOX.abc.1";
  rejections->reject(ok, invalid_argument("bad"), "api", Encoding::json);
  // The reply goes first, then the dead letter.
  ASSERT_EQ(publisher.sent.size(), 8u);
  EXPECT_EQ(publisher.sent[6].subject, "_INBOX.abc.1");
  EXPECT_EQ(publisher.sent[6].header("Nats-Service-Error-Code"), "400");
}

TEST_F(RejectionsTest, InputCannotPresetDlqHeaders) {
  make();
  BusMessage m = input("org.demo.health.api.http", "abc");
  m.headers = {{"Orgd-Dlq-Body-Size", "1"}, {"orgd-dlq-reason", "forged"}, {"Nats-Msg-Id", "x"}};
  reject(m);
  const auto dead = publisher.dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  int sizes = 0;
  for (const auto& [k, v] : dead[0].headers) {
    if (k == kDlqBodySizeHeader) ++sizes;
    EXPECT_NE(v, "forged");
    EXPECT_NE(k, "Nats-Msg-Id");
  }
  EXPECT_EQ(sizes, 1);
  EXPECT_EQ(dead[0].header(kDlqBodySizeHeader), "3");
}

}  // namespace
}  // namespace orgd
