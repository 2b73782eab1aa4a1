#pragma once

#include <google/protobuf/timestamp.pb.h>

#include <chrono>
#include <string>

namespace orgd {

using TimePoint = std::chrono::system_clock::time_point;

inline google::protobuf::Timestamp to_timestamp(TimePoint t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  google::protobuf::Timestamp ts;
  ts.set_seconds(ns / 1'000'000'000);
  ts.set_nanos(static_cast<int>(ns % 1'000'000'000));
  return ts;
}

inline TimePoint from_timestamp(const google::protobuf::Timestamp& ts) {
  return TimePoint{std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds{ts.seconds()} + std::chrono::nanoseconds{ts.nanos()})};
}

// Unset timestamps (proto3 default) are the epoch itself.
inline bool is_set(const google::protobuf::Timestamp& ts) {
  return ts.seconds() != 0 || ts.nanos() != 0;
}

// RFC 3339 UTC with millisecond precision: 2026-11-26T06:42:31.123Z.
std::string format_rfc3339(TimePoint t);

}  // namespace orgd
