#include "tests/support/deploy_api.hpp"

#include <gtest/gtest.h>

#include "daemon/bus/message.hpp"
#include "daemon/events/codec.hpp"
#include "tests/support/wait.hpp"

namespace orgd::testing {

std::optional<ApiReply> api_call(natsConnection* conn, const std::string& subject,
                                 const std::string& data, std::chrono::milliseconds timeout) {
  natsMsg* reply = nullptr;
  const natsStatus s =
      natsConnection_Request(&reply, conn, subject.c_str(), data.data(),
                             static_cast<int>(data.size()), static_cast<int64_t>(timeout.count()));
  if (s != NATS_OK) return std::nullopt;
  BusMessage copy = BusMessage::copy_from(reply);
  natsMsg_Destroy(reply);
  return ApiReply{copy.data, copy.header("Nats-Service-Error-Code"),
                  copy.header("Nats-Service-Error")};
}

v1::DeployAccepted api_deploy(natsConnection* conn, const std::string& prefix,
                              const std::string& body) {
  auto reply = api_call(conn, prefix + ".api.deploy", body);
  EXPECT_TRUE(reply.has_value());
  v1::DeployAccepted accepted;
  if (reply) {
    EXPECT_FALSE(reply->error_code) << reply->data;
    EXPECT_TRUE(decode(reply->data, Encoding::json, accepted, 1 << 20)) << reply->data;
  }
  return accepted;
}

std::optional<v1::DeployRecord> api_deploy_get(natsConnection* conn, const std::string& prefix,
                                               const std::string& deploy_id) {
  auto reply =
      api_call(conn, prefix + ".api.deploy.get", R"({"deployId":")" + deploy_id + R"("})");
  if (!reply || reply->error_code) return std::nullopt;
  v1::DeployRecord record;
  if (!decode(reply->data, Encoding::json, record, 1 << 22)) return std::nullopt;
  return record;
}

v1::DeployRecord wait_deploy_finished(natsConnection* conn, const std::string& prefix,
                                      const std::string& deploy_id,
                                      std::chrono::milliseconds deadline,
                                      std::chrono::milliseconds poll) {
  v1::DeployRecord last;
  const bool done = wait_until(
      [&] {
        auto record = api_deploy_get(conn, prefix, deploy_id);
        if (!record) return false;
        last = *record;
        return last.state() != v1::DeployRecord::pending &&
               last.state() != v1::DeployRecord::running;
      },
      deadline, poll);
  EXPECT_TRUE(done) << "deploy " << deploy_id << " did not finish: " << last.DebugString();
  return last;
}

}  // namespace orgd::testing
