#include "daemon/bus/streams.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>

namespace orgd {
namespace {
constexpr jsErrCode kStreamNameExists = static_cast<jsErrCode>(10058);
constexpr std::int64_t kNanos = 1'000'000'000;
}  // namespace

std::vector<StreamSpec> orgd_streams(const std::string& prefix, int replicas) {
  using std::chrono::hours;
  std::vector<StreamSpec> specs;
  specs.push_back({kCmdStream, "orgd commands (deploy, secrets.sync, secrets.rotate)",
                   {prefix + ".cmd.>"}, -1,
                   std::chrono::duration_cast<std::chrono::seconds>(hours(24 * 7)), -1,
                   std::chrono::seconds(120), replicas});
  specs.push_back({kEventsStream, "orgd audit trail", {prefix + ".events.>"}, -1,
                   std::chrono::duration_cast<std::chrono::seconds>(hours(24 * 30)),
                   1024LL * 1024 * 1024, std::chrono::seconds(120), replicas});
  // One message per subject: the last state of each service, so durability costs grow with
  // state changes, not with heartbeat rate.
  // Anyone allowed to publish on these subjects writes into the stream: messages far larger
  // than what orgd itself writes there are refused, so junk cannot push real ones out at
  // max_payload a message. (A health state is a few hundred bytes; a dead letter keeps 4 KiB of
  // its body and bounded headers.)
  specs.push_back({kHealthStream, "last known state of each service",
                   {prefix + ".state.health.>"}, 1, std::chrono::seconds(0), -1,
                   std::chrono::seconds(120), replicas, 16 * 1024});
  specs.push_back({kDlqStream, "rejected or undeliverable inputs with the reason",
                   {prefix + ".dlq.>"}, -1,
                   std::chrono::duration_cast<std::chrono::seconds>(hours(24 * 30)),
                   256LL * 1024 * 1024, std::chrono::seconds(120), replicas, 64 * 1024});
  return specs;
}

StreamSpec github_events_stream(std::chrono::seconds dedup_window, int replicas) {
  const std::chrono::seconds max_age = std::chrono::hours(24 * 7);
  StreamSpec spec;
  spec.name = kGithubEventsStream;
  spec.description = "GitHub webhook deliveries, verified";
  spec.subjects = {"github.>"};
  spec.max_age = max_age;
  spec.max_bytes = 1024LL * 1024 * 1024;
  // JetStream refuses a duplicate window longer than the stream's max age.
  spec.duplicate_window = std::clamp(dedup_window, std::chrono::seconds(1), max_age);
  spec.replicas = replicas;
  return spec;
}

Result<Ok> ensure_stream(jsCtx* js, const StreamSpec& spec) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  std::vector<const char*> subjects;
  for (const auto& s : spec.subjects) subjects.push_back(s.c_str());
  cfg.Name = spec.name.c_str();
  cfg.Description = spec.description.c_str();
  cfg.Subjects = subjects.data();
  cfg.SubjectsLen = static_cast<int>(subjects.size());
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.MaxMsgsPerSubject = spec.max_msgs_per_subject;
  cfg.MaxAge = spec.max_age.count() * kNanos;
  cfg.MaxBytes = spec.max_bytes;
  cfg.Duplicates = spec.duplicate_window.count() * kNanos;
  cfg.MaxMsgSize = spec.max_msg_size;
  cfg.Replicas = spec.replicas;
  cfg.Discard = js_DiscardOld;

  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&info, js, &cfg, nullptr, &err);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Ok{};
  }
  if (err != kStreamNameExists) {
    return unavailable(fmt::format("creating stream {}: {} (error code {})", spec.name,
                                   natsStatus_GetText(s), static_cast<int>(err)));
  }
  s = js_UpdateStream(&info, js, &cfg, nullptr, &err);
  if (s != NATS_OK) {
    return unavailable(fmt::format("updating stream {}: {} (error code {})", spec.name,
                                   natsStatus_GetText(s), static_cast<int>(err)));
  }
  jsStreamInfo_Destroy(info);
  return Ok{};
}

}  // namespace orgd
