#include "daemon/events/codec.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "daemon/events/fast_json.hpp"
#include "daemon/events/utf8.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/error.pb.h"
#include "orgd/v1/secrets.pb.h"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd {
namespace {

namespace pbutil = google::protobuf::util;

// protobuf's status messages can quote the input; keep error texts short and printable.
std::string short_reason(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 200)) {
    out.push_back(static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e
                      ? '?'
                      : c);
  }
  return out;
}

}  // namespace

Encoding encoding_from_content_type(std::string_view content_type) {
  // Parameters (";charset=...") and case do not matter.
  auto semi = content_type.find(';');
  auto base = content_type.substr(0, semi);
  while (!base.empty() && base.back() == ' ') base.remove_suffix(1);
  while (!base.empty() && base.front() == ' ') base.remove_prefix(1);
  std::string lower(base);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == kProtobufContentType || lower == "application/x-protobuf") {
    return Encoding::protobuf;
  }
  return Encoding::json;
}

std::string_view content_type(Encoding encoding) {
  return encoding == Encoding::protobuf ? kProtobufContentType : kJsonContentType;
}

bool valid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c == 0) return false;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::uint32_t cp;
    int length = decode_utf8_sequence(p, end, cp);
    if (length == 0) return false;
    p += length;
  }
  return true;
}

void preload_descriptors() {
  // One message per .proto file (descriptors are assigned per file), and the well-known types.
  (void)v1::HealthReport::descriptor();
  (void)v1::OrgStatus::descriptor();
  (void)v1::DeployRecord::descriptor();
  (void)v1::SecretSyncRequest::descriptor();
  (void)v1::ErrorReply::descriptor();
  (void)google::protobuf::Timestamp::descriptor();
  (void)google::protobuf::ListValue::descriptor();
}

bool valid_subject_token(std::string_view token) {
  if (token.empty() || token.size() > 128) return false;
  for (char c : token) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

Result<Ok> decode(std::string_view data, Encoding encoding, google::protobuf::Message& out,
                  std::size_t max_bytes) {
  out.Clear();
  if (data.size() > max_bytes) {
    return invalid_argument(
        fmt::format("payload of {} bytes exceeds the limit of {} bytes", data.size(), max_bytes));
  }
  if (data.empty()) return Ok{};
  if (encoding == Encoding::protobuf) {
    if (!out.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      return invalid_argument(
          fmt::format("payload is not a valid binary {} message", out.GetDescriptor()->name()));
    }
    // Fields from newer schemas are accepted (forward compatibility) but not carried along:
    // nothing orgd stores or re-publishes holds bytes it does not understand.
    out.DiscardUnknownFields();
    return Ok{};
  }
  if (out.GetDescriptor() == v1::HealthReport::descriptor()) {
    // Health reports are the high-volume input; their usual form skips protobuf's JSON parser.
    if (auto fast = fast_decode_health_report(data)) {
      static_cast<v1::HealthReport&>(out) = std::move(*fast);
      return Ok{};
    }
  }
  if (!valid_utf8(data)) {
    return invalid_argument("payload is not UTF-8 JSON (binary data? set Content-Type: " +
                            std::string(kProtobufContentType) + " for protobuf)");
  }
  pbutil::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = pbutil::JsonStringToMessage(data, &out, options);
  if (!status.ok()) {
    out.Clear();
    return invalid_argument(fmt::format("invalid {} JSON: {}", out.GetDescriptor()->name(),
                                        short_reason(std::string(status.message()))));
  }
  return Ok{};
}

std::string encode_generic_json(const google::protobuf::Message& message) {
  std::string out;
  pbutil::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = false;
  auto status = pbutil::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    // Only invalid UTF-8 in a string field can get here; inputs are validated before they are
    // stored, so this is a programming error. Keep the reply well-formed regardless.
    return R"({"error":{"code":"internal","message":"reply could not be encoded"}})";
  }
  return out;
}

std::string encode(const google::protobuf::Message& message, Encoding encoding) {
  if (encoding == Encoding::protobuf) {
    std::string out;
    message.SerializeToString(&out);
    return out;
  }
  const auto* descriptor = message.GetDescriptor();
  if (descriptor == v1::OrgStatus::descriptor()) {
    return fast_encode_org_status(static_cast<const v1::OrgStatus&>(message));
  }
  if (descriptor == v1::RepoStatus::descriptor()) {
    return fast_encode_repo_status(static_cast<const v1::RepoStatus&>(message));
  }
  return encode_generic_json(message);
}

std::string encode_error(const Error& error, Encoding encoding) {
  orgd::v1::ErrorReply reply;
  reply.mutable_error()->set_code(std::string(code_name(error.code)));
  // A message built from bad input may carry invalid UTF-8; proto3 strings must be UTF-8.
  reply.mutable_error()->set_message(valid_utf8(error.message) ? error.message
                                                               : short_reason(error.message));
  return encode(reply, encoding);
}

}  // namespace orgd
