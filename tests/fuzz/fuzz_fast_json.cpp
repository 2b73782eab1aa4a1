// Fuzzes the health report shortcut: whatever fast_decode_health_report accepts, protobuf's full
// JSON parser must accept too and turn into an equal message. Rejecting is always allowed.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "daemon/events/fast_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  auto fast = orgd::fast_decode_health_report(json);
  if (!fast) return 0;
  orgd::v1::HealthReport full;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  if (!google::protobuf::util::JsonStringToMessage(json, &full, options).ok()) std::abort();
  if (!google::protobuf::util::MessageDifferencer::Equals(*fast, full)) std::abort();
  return 0;
}
