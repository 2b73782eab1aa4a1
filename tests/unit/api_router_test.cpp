#include "daemon/events/api_router.hpp"

#include <gtest/gtest.h>

#include "orgd/v1/status.pb.h"

namespace orgd {
namespace {

class CapturingPublisher final : public Publisher {
 public:
  Result<Ok> publish(const BusMessage& m) override {
    sent.push_back(m);
    return Ok{};
  }
  std::vector<BusMessage> sent;
};

class ApiRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router.add<v1::RepoStatusRequest, v1::RepoStatus>(
        "status.repo", [](const v1::RepoStatusRequest& r) -> Result<v1::RepoStatus> {
          if (r.repo().empty()) return invalid_argument("repo is required");
          if (r.repo() != "api") return not_found("unknown repo '" + r.repo() + "'");
          v1::RepoStatus s;
          s.set_name("api");
          return s;
        });
    router.add<v1::StatusRequest, v1::OrgStatus>(
        "status", [](const v1::StatusRequest&) -> Result<v1::OrgStatus> {
          return unavailable("not ready");
        });
  }
  BusMessage request(std::string data, std::string content_type = "") {
    BusMessage m;
    m.subject = "org.demo.api.status.repo";
    m.reply = "_INBOX.1";
    m.data = std::move(data);
    if (!content_type.empty()) m.headers.emplace_back("Content-Type", content_type);
    return m;
  }
  const BusMessage* find(const std::string& subject) {
    for (const auto& m : publisher.sent) {
      if (m.subject == subject) return &m;
    }
    return nullptr;
  }

  CapturingPublisher publisher;
  MetricsRegistry metrics;
  Rejections rejections{"org.demo", publisher, metrics};
  ApiRouter router{"org.demo", 1024, publisher, rejections, metrics};
};

TEST_F(ApiRouterTest, EndpointsAreNamedForAdr32) {
  ASSERT_EQ(router.endpoint_count(), 2u);
  EXPECT_EQ(router.endpoint_subject(0), "org.demo.api.status.repo");
  EXPECT_EQ(router.endpoint_name(0), "status_repo");
}

TEST_F(ApiRouterTest, RepliesInJsonByDefault) {
  router.dispatch(0, request(R"({"repo":"api"})"));
  ASSERT_EQ(publisher.sent.size(), 1u);
  EXPECT_EQ(publisher.sent[0].subject, "_INBOX.1");
  EXPECT_NE(publisher.sent[0].data.find(R"("name":"api")"), std::string::npos);
  EXPECT_EQ(publisher.sent[0].header("Content-Type"), "application/json");
  EXPECT_FALSE(publisher.sent[0].header("Nats-Service-Error-Code").has_value());
}

TEST_F(ApiRouterTest, RepliesInTheRequestsEncoding) {
  v1::RepoStatusRequest req;
  req.set_repo("api");
  router.dispatch(0, request(encode(req, Encoding::protobuf), "application/protobuf"));
  ASSERT_EQ(publisher.sent.size(), 1u);
  v1::RepoStatus reply;
  ASSERT_TRUE(decode(publisher.sent[0].data, Encoding::protobuf, reply, 1024).ok());
  EXPECT_EQ(reply.name(), "api");
  EXPECT_EQ(publisher.sent[0].header("Content-Type"), "application/protobuf");
}

TEST_F(ApiRouterTest, MalformedInputGetsErrorReplyDeadLetterAndCount) {
  router.dispatch(0, request("{not json"));
  const BusMessage* reply = find("_INBOX.1");
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(reply->header("Nats-Service-Error-Code"), "400");
  EXPECT_NE(reply->data.find(R"("code":"invalid_argument")"), std::string::npos);
  const BusMessage* dead = find("org.demo.dlq.api.status.repo");
  ASSERT_NE(dead, nullptr);
  EXPECT_EQ(dead->data, "{not json");
  EXPECT_EQ(dead->header("Orgd-Dlq-Subject"), "org.demo.api.status.repo");
  EXPECT_NE(dead->header("Orgd-Dlq-Reason").value_or("").find("invalid"), std::string::npos);
  EXPECT_EQ(metrics
                .counter("orgd_messages_rejected_total", "",
                         {{"kind", "api"}, {"code", "invalid_argument"}})
                .value(),
            1);
  auto stats = router.stats();
  EXPECT_EQ(stats[0].num_requests, 1u);
  EXPECT_EQ(stats[0].num_errors, 1u);
  EXPECT_EQ(stats[0].last_error.substr(0, 4), "400:");
}

// A lookup that finds nothing is an answer to the caller, not bad input: a 404 reply and no
// dead letter. Only malformed input is dead-lettered.
TEST_F(ApiRouterTest, UnknownRepoIsA404ReplyNotADeadLetter) {
  router.dispatch(0, request(R"({"repo":"nope"})"));
  const BusMessage* reply = find("_INBOX.1");
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(reply->header("Nats-Service-Error-Code"), "404");
  EXPECT_EQ(reply->header("Nats-Service-Error"), "unknown repo 'nope'");
  EXPECT_NE(reply->data.find(R"("code":"not_found")"), std::string::npos) << reply->data;
  EXPECT_EQ(find("org.demo.dlq.api.status.repo"), nullptr);
  EXPECT_EQ(publisher.sent.size(), 1u);
}

TEST_F(ApiRouterTest, ConflictsAreRepliesNotDeadLetters) {
  router.add<v1::RepoStatusRequest, v1::RepoStatus>(
      "busy", [](const v1::RepoStatusRequest&) -> Result<v1::RepoStatus> {
        return conflict("api/dev is locked by deploy x");
      });
  BusMessage m = request("{}");
  m.subject = "org.demo.api.busy";
  router.dispatch(2, m);
  ASSERT_EQ(publisher.sent.size(), 1u);
  EXPECT_EQ(publisher.sent[0].subject, "_INBOX.1");
  EXPECT_EQ(publisher.sent[0].header("Nats-Service-Error-Code"), "409");
}

TEST_F(ApiRouterTest, OversizedPayloadIsRejected) {
  router.dispatch(0, request(R"({"repo":")" + std::string(2000, 'a') + R"("})"));
  const BusMessage* reply = find("_INBOX.1");
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(reply->header("Nats-Service-Error-Code"), "400");
  EXPECT_NE(reply->data.find("exceeds the limit"), std::string::npos);
}

TEST_F(ApiRouterTest, ServerSideErrorsAreNotDeadLettered) {
  BusMessage m = request("");
  m.subject = "org.demo.api.status";
  router.dispatch(1, m);
  ASSERT_EQ(publisher.sent.size(), 1u);
  EXPECT_EQ(publisher.sent[0].header("Nats-Service-Error-Code"), "503");
}

TEST_F(ApiRouterTest, DeadLetterHeadersCannotBeForgedByInput) {
  BusMessage m = request("{bad");
  m.headers.emplace_back("Orgd-Dlq-Reason", "forged");
  router.dispatch(0, m);
  const BusMessage* dead = find("org.demo.dlq.api.status.repo");
  ASSERT_NE(dead, nullptr);
  int reasons = 0;
  for (const auto& [k, v] : dead->headers) {
    if (k == "Orgd-Dlq-Reason") {
      ++reasons;
      EXPECT_NE(v, "forged");
    }
  }
  EXPECT_EQ(reasons, 1);
}

}  // namespace
}  // namespace orgd

namespace orgd {
namespace {

// Refuses what is over its limit the way NatsConnection does.
class LimitedPublisher final : public Publisher {
 public:
  explicit LimitedPublisher(std::size_t limit) : limit_(limit) {}
  Result<Ok> publish(const BusMessage& m) override {
    if (m.wire_size() > limit_) return too_large(std::to_string(m.wire_size()) + " bytes, over");
    sent.push_back(m);
    return Ok{};
  }
  std::size_t max_payload() const override { return limit_; }
  std::vector<BusMessage> sent;

 private:
  std::size_t limit_;
};

TEST(ApiRouterReplySize, AReplyOverTheLimitBecomesA413WithTheEndpointsHint) {
  LimitedPublisher publisher(2048);
  MetricsRegistry metrics;
  Rejections rejections{"org.demo", publisher, metrics};
  ApiRouter router{"org.demo", 1024, publisher, rejections, metrics};
  router.add<v1::RepoStatusRequest, v1::RepoStatus>(
      "status.repo",
      [](const v1::RepoStatusRequest& r) -> Result<v1::RepoStatus> {
        v1::RepoStatus s;
        s.set_name(std::string(r.repo() == "big" ? 4096 : 8, 'n'));
        return s;
      },
      "ask for less");
  BusMessage request;
  request.subject = "org.demo.api.status.repo";
  request.reply = "_INBOX.9";
  request.data = R"({"repo":"big"})";
  router.dispatch(0, request);
  router.dispatch(0, request);
  ASSERT_EQ(publisher.sent.size(), 2u) << "each request gets an answer";
  const BusMessage& reply = publisher.sent[0];
  EXPECT_EQ(reply.subject, "_INBOX.9");
  EXPECT_EQ(reply.header("Nats-Service-Error-Code"), "413");
  EXPECT_NE(reply.data.find("too_large"), std::string::npos) << reply.data;
  EXPECT_NE(reply.data.find("ask for less"), std::string::npos) << reply.data;
  EXPECT_NE(reply.data.find("org.demo.api.status.repo"), std::string::npos) << reply.data;
  EXPECT_EQ(metrics
                .counter("orgd_api_replies_too_large_total", "", {{"endpoint", "status.repo"}})
                .value(),
            2);
  const auto stats = router.stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].num_requests, 2u);
  EXPECT_EQ(stats[0].num_errors, 2u) << "a reply that could not be sent is the endpoint's error";
  EXPECT_NE(stats[0].last_error.find("413:"), std::string::npos) << stats[0].last_error;

  request.data = R"({"repo":"small"})";
  router.dispatch(0, request);
  ASSERT_EQ(publisher.sent.size(), 3u);
  EXPECT_FALSE(publisher.sent[2].header("Nats-Service-Error-Code").has_value());
}

TEST(BusMessageSize, WireSizeCountsTheHeaderBlock) {
  BusMessage m;
  m.data = "12345";
  EXPECT_EQ(m.wire_size(), 5u);
  m.headers.emplace_back("Ab", "cd");
  // "NATS/1.0\r\n" + "Ab: cd\r\n" + "\r\n" + the data
  EXPECT_EQ(m.wire_size(), 10u + 8u + 2u + 5u);
}

}  // namespace
}  // namespace orgd
