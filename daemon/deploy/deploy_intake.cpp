#include "daemon/deploy/deploy_intake.hpp"

#include "daemon/deploy/record_pages.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::deploy {

DeployIntake::DeployIntake(Orchestrator& orchestrator, Rejections& rejections, std::string prefix,
                           std::size_t max_payload)
    : orchestrator_(orchestrator),
      rejections_(rejections),
      prefix_(std::move(prefix)),
      max_payload_(max_payload) {}

void DeployIntake::register_api(ApiRouter& router) {
  router.add<v1::DeployRequest, v1::DeployAccepted>(
      "deploy", [this](const v1::DeployRequest& r) { return orchestrator_.deploy(r); });
  router.add<v1::DeployGetRequest, v1::DeployRecord>(
      "deploy.get",
      [this](const v1::DeployGetRequest& r) -> Result<v1::DeployRecord> {
        auto record = orchestrator_.get(r);
        if (!record) return record;
        return record_page(std::move(record.value()), r);
      },
      "ask for smaller pages of steps (page_size)");
  router.add<v1::DeployListRequest, v1::DeployList>(
      "deploy.list",
      [this](const v1::DeployListRequest& r) -> Result<v1::DeployList> {
        auto list = orchestrator_.list(r);
        if (!list) return list;
        for (auto& record : *list.value().mutable_deploys()) trim_for_list(record);
        return list;
      },
      "ask for fewer (limit) or filter by repo or env");
  router.add<v1::DeployCancelRequest, v1::DeployRecord>(
      "deploy.cancel", [this](const v1::DeployCancelRequest& r) -> Result<v1::DeployRecord> {
        auto record = orchestrator_.cancel(r);
        if (!record) return record;
        // The first page of steps; deploy.get has the rest.
        return record_page(std::move(record.value()), v1::DeployGetRequest{});
      });
}

Result<Ok> DeployIntake::on_command(const BusMessage& command, const std::string& dedup_id) {
  const Encoding encoding =
      encoding_from_content_type(command.header(kContentTypeHeader).value_or(std::string()));
  v1::DeployRequest request;
  if (auto decoded = decode(command.data, encoding, request, max_payload_); !decoded) {
    return decoded.error();
  }
  // A command whose repo+env is locked is accepted into the deploy queue (and acked), so it
  // holds no intake slot and burns no delivery while it waits.
  auto accepted = orchestrator_.deploy(request, dedup_id, Orchestrator::WhenLocked::queue);
  if (!accepted) {
    if (accepted.error().code == ErrorCode::conflict) {
      // The queue is full: waiting will not make room soon, so it is a dead letter now, not
      // after its redeliveries. Acked: it is done with.
      BusMessage original = command;
      original.reply.clear();
      rejections_.reject(original, accepted.error(), "cmd", encoding);
      return Ok{};
    }
    return accepted.error();
  }
  return Ok{};
}

Result<bool> DeployIntake::carried_out(const BusMessage& command, const std::string& dedup_id) {
  const Encoding encoding =
      encoding_from_content_type(command.header(kContentTypeHeader).value_or(std::string()));
  v1::DeployRequest request;
  // Undecodable: it was dead-lettered at its first delivery already.
  if (!decode(command.data, encoding, request, max_payload_)) return true;
  return orchestrator_.request_known(request.request_id().empty() ? dedup_id
                                                                  : request.request_id());
}

void DeployIntake::on_event(const BusMessage& message) {
  // P.events.deploy.<id>.<kind>. Log lines are the bulk of deploy events and change no
  // summary; an event of any other kind only prompts re-reading the record it names, so its
  // body is not kept, and one larger than any orgd writes is not even decoded.
  constexpr std::size_t kMaxDeployEventBytes = 64 * 1024;
  const std::string head = prefix_ + ".events.deploy.";
  if (message.subject.compare(0, head.size(), head) != 0) return;
  const std::string rest = message.subject.substr(head.size());
  const auto dot = rest.find('.');
  if (dot == std::string::npos) return;
  const std::string id = rest.substr(0, dot);
  const std::string kind = rest.substr(dot + 1);
  if (kind == "log" || message.data.size() > kMaxDeployEventBytes) return;
  v1::DeployEvent event;
  if (!decode(message.data, Encoding::json, event, kMaxDeployEventBytes)) return;
  if (event.deploy_id() != id || event.kind() != kind) return;
  orchestrator_.observe(event);
}

}  // namespace orgd::deploy
