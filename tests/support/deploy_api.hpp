#pragma once

#include <nats/nats.h>

#include <chrono>
#include <optional>
#include <string>

#include "orgd/v1/deploy.pb.h"

namespace orgd::testing {

// A request's reply with its ADR-32 error headers, if any.
struct ApiReply {
  std::string data;
  std::optional<std::string> error_code;
  std::optional<std::string> error;
};

// Request-reply on `subject`; nullopt when nothing answered within `timeout`.
std::optional<ApiReply> api_call(natsConnection* conn, const std::string& subject,
                                 const std::string& data,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));

// P.api.deploy with `body` (JSON); a test failure unless it is accepted.
v1::DeployAccepted api_deploy(natsConnection* conn, const std::string& prefix,
                              const std::string& body);

// P.api.deploy.get; nullopt on an error reply or no answer.
std::optional<v1::DeployRecord> api_deploy_get(natsConnection* conn, const std::string& prefix,
                                               const std::string& deploy_id);

// Polls deploy.get until the deploy is neither pending nor running; a test failure (and the last
// record seen) when it is not finished by `deadline`.
v1::DeployRecord wait_deploy_finished(natsConnection* conn, const std::string& prefix,
                                      const std::string& deploy_id,
                                      std::chrono::milliseconds deadline,
                                      std::chrono::milliseconds poll);

}  // namespace orgd::testing
