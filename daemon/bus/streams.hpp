#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "daemon/core/errors.hpp"

struct __jsCtx;

namespace orgd {

struct StreamSpec {
  std::string name;
  std::string description;
  std::vector<std::string> subjects;
  std::int64_t max_msgs_per_subject = -1;
  std::chrono::seconds max_age{0};  // 0: keep forever (bounded by max_bytes)
  std::int64_t max_bytes = -1;
  std::chrono::seconds duplicate_window{120};
  int replicas = 1;
  // Larger messages are refused by the server (-1: up to max_payload).
  std::int32_t max_msg_size = -1;
};

// The streams of DESIGN.md §4 for subject prefix P.
std::vector<StreamSpec> orgd_streams(const std::string& prefix, int replicas);

// GITHUB_EVENTS: verified GitHub webhook deliveries on github.<owner>.<repo>.<event>, kept 7
// days (longer than GitHub lets anyone redeliver: 3 days), each delivery id remembered for
// `dedup_window` (at most 7 days) so a redelivery within it is stored once.
StreamSpec github_events_stream(std::chrono::seconds dedup_window, int replicas);

// Creates the stream, or updates it when it exists (idempotent).
Result<Ok> ensure_stream(__jsCtx* js, const StreamSpec& spec);

// Stream and subject names of orgd's fixed streams.
inline constexpr const char* kCmdStream = "ORGD_CMD";
inline constexpr const char* kEventsStream = "ORGD_EVENTS";
inline constexpr const char* kHealthStream = "ORGD_HEALTH";
inline constexpr const char* kDlqStream = "ORGD_DLQ";
inline constexpr const char* kGithubEventsStream = "GITHUB_EVENTS";

}  // namespace orgd
