#pragma once

// What reaches the orchestrator from the bus, decoded and checked here so that the daemon only
// wires subscriptions to it: the deploy endpoints of P.api, deploy commands (P.cmd.deploy,
// delivered by the command intake), the intake's question whether a command ran out of
// deliveries without being carried out, and deploy events (P.events.deploy.<id>.<kind>), which
// are only prompts to re-read the record they name.

#include <cstddef>
#include <string>

#include "daemon/bus/message.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/deploy/orchestrator.hpp"
#include "daemon/events/api_router.hpp"
#include "daemon/events/rejections.hpp"

namespace orgd::deploy {

class DeployIntake {
 public:
  // `max_payload`: the largest command body decoded (the connection's max_payload).
  DeployIntake(Orchestrator& orchestrator, Rejections& rejections, std::string prefix,
               std::size_t max_payload);

  // deploy, deploy.get, deploy.list, deploy.cancel.
  void register_api(ApiRouter& router);

  // A delivered P.cmd.deploy: accepted, queued behind a held lock, or an error (redelivered
  // while it is `unavailable`, dead-lettered by the intake otherwise).
  Result<Ok> on_command(const BusMessage& command, const std::string& dedup_id);
  // Whether the deploy a command asks for was accepted (an undecodable command counts as done:
  // it was dead-lettered at its first delivery).
  Result<bool> carried_out(const BusMessage& command, const std::string& dedup_id);
  void on_event(const BusMessage& message);

 private:
  Orchestrator& orchestrator_;
  Rejections& rejections_;
  std::string prefix_;
  std::size_t max_payload_;
};

}  // namespace orgd::deploy
