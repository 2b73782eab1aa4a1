#include "daemon/events/codec.hpp"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "daemon/events/fast_json.hpp"
#include "daemon/events/utf8.hpp"
#include "orgd/v1/deploy.pb.h"
#include "orgd/v1/error.pb.h"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/secrets.pb.h"
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

namespace gpb = google::protobuf;
using Json = nlohmann::json;

// Field paths and quoted values in error texts stay short and printable.
std::string in_quotes(std::string_view text) {
  std::string out = "\"";
  out += short_reason(text.substr(0, 64));
  if (text.size() > 64) out += "...";
  out += "\"";
  return out;
}

// What a field's JSON value must be, in words ("a string", "a list of strings").
std::string expected_of(const gpb::FieldDescriptor& field, bool element) {
  const bool list = field.is_repeated() && !field.is_map() && !element;
  std::string what;
  if (field.is_map() && !element) return "an object";
  switch (field.cpp_type()) {
    case gpb::FieldDescriptor::CPPTYPE_STRING:
      what = field.type() == gpb::FieldDescriptor::TYPE_BYTES ? "base64 text" : "a string";
      break;
    case gpb::FieldDescriptor::CPPTYPE_BOOL:
      what = "true or false";
      break;
    case gpb::FieldDescriptor::CPPTYPE_INT32:
    case gpb::FieldDescriptor::CPPTYPE_INT64:
    case gpb::FieldDescriptor::CPPTYPE_UINT32:
    case gpb::FieldDescriptor::CPPTYPE_UINT64:
      what = "a whole number";
      break;
    case gpb::FieldDescriptor::CPPTYPE_DOUBLE:
    case gpb::FieldDescriptor::CPPTYPE_FLOAT:
      what = "a number";
      break;
    case gpb::FieldDescriptor::CPPTYPE_ENUM:
      what = "a name";
      break;
    case gpb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const std::string& type = field.message_type()->full_name();
      if (type == "google.protobuf.Timestamp") {
        what = "an RFC 3339 time";
      } else if (type == "google.protobuf.ListValue") {
        what = "a list";
      } else if (type == "google.protobuf.Value") {
        what = "a value";
      } else {
        what = "an object";
      }
      break;
    }
  }
  if (!list) return what;
  if (what.rfind("a ", 0) == 0) return "a list of " + what.substr(2) + "s";
  if (what.rfind("an ", 0) == 0) return "a list of " + what.substr(3) + "s";
  return "a list of " + what;
}

std::optional<std::string> check_message(const Json& value, const gpb::Descriptor& type,
                                         const std::string& path);

// One value of `field` (an element, when the field is repeated).
std::optional<std::string> check_value(const Json& value, const gpb::FieldDescriptor& field,
                                       const std::string& path) {
  const auto wrong = [&] {
    return "field " + in_quotes(path) + ": expected " + expected_of(field, true);
  };
  switch (field.cpp_type()) {
    case gpb::FieldDescriptor::CPPTYPE_STRING:
      if (!value.is_string()) return wrong();
      return std::nullopt;
    case gpb::FieldDescriptor::CPPTYPE_BOOL:
      if (!value.is_boolean()) return wrong();
      return std::nullopt;
    case gpb::FieldDescriptor::CPPTYPE_INT32:
    case gpb::FieldDescriptor::CPPTYPE_INT64:
    case gpb::FieldDescriptor::CPPTYPE_UINT32:
    case gpb::FieldDescriptor::CPPTYPE_UINT64: {
      const bool is_unsigned = field.cpp_type() == gpb::FieldDescriptor::CPPTYPE_UINT32 ||
                               field.cpp_type() == gpb::FieldDescriptor::CPPTYPE_UINT64;
      const bool is_32 = field.cpp_type() == gpb::FieldDescriptor::CPPTYPE_INT32 ||
                         field.cpp_type() == gpb::FieldDescriptor::CPPTYPE_UINT32;
      // proto3 JSON also takes 64-bit numbers as strings of digits; protobuf checks their range.
      if (value.is_string()) {
        if (is_32) return wrong();
        const auto& text = value.get_ref<const std::string&>();
        const bool digits = !text.empty() && text.size() <= 20 &&
                            std::all_of(text.begin() + (text[0] == '-' ? 1 : 0), text.end(),
                                        [](char c) { return c >= '0' && c <= '9'; });
        if (!digits) return wrong();
        return std::nullopt;
      }
      if (value.is_number_float()) {
        const double d = value.get<double>();
        if (d != static_cast<double>(static_cast<std::int64_t>(d))) return wrong();
      } else if (!value.is_number()) {
        return wrong();
      }
      const bool negative =
          value.is_number_integer() && !value.is_number_unsigned() && value.get<std::int64_t>() < 0;
      if (is_unsigned && negative) {
        return "field " + in_quotes(path) + ": must not be negative";
      }
      if (is_32 && value.is_number_integer()) {
        const bool fits =
            value.is_number_unsigned()
                ? value.get<std::uint64_t>() <= (is_unsigned
                                                     ? std::numeric_limits<std::uint32_t>::max()
                                                     : std::numeric_limits<std::int32_t>::max())
                : value.get<std::int64_t>() >= std::numeric_limits<std::int32_t>::min();
        if (!fits) return "field " + in_quotes(path) + ": number out of range";
      }
      return std::nullopt;
    }
    case gpb::FieldDescriptor::CPPTYPE_DOUBLE:
    case gpb::FieldDescriptor::CPPTYPE_FLOAT:
      if (!value.is_number() && !value.is_string()) return wrong();
      return std::nullopt;
    case gpb::FieldDescriptor::CPPTYPE_ENUM: {
      const gpb::EnumDescriptor& e = *field.enum_type();
      if (value.is_number_integer()) {
        if (e.FindValueByNumber(value.get<int>()) != nullptr) return std::nullopt;
      } else if (value.is_string()) {
        if (e.FindValueByName(value.get_ref<const std::string&>()) != nullptr) {
          return std::nullopt;
        }
      } else {
        return wrong();
      }
      std::string names;
      for (int i = 0; i < e.value_count(); ++i) {
        names += (i == 0 ? "" : ", ") + e.value(i)->name();
      }
      return "field " + in_quotes(path) + ": unknown value " +
             (value.is_string() ? in_quotes(value.get_ref<const std::string&>()) : value.dump()) +
             " (expected one of " + names + ")";
    }
    case gpb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const gpb::Descriptor& type = *field.message_type();
      const std::string& name = type.full_name();
      if (name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration") {
        if (!value.is_string()) return wrong();
        return std::nullopt;
      }
      if (name == "google.protobuf.ListValue") {
        if (!value.is_array()) return wrong();
        return std::nullopt;
      }
      if (name == "google.protobuf.Value") return std::nullopt;
      if (name == "google.protobuf.Struct") {
        if (!value.is_object()) return wrong();
        return std::nullopt;
      }
      if (!value.is_object()) return wrong();
      return check_message(value, type, path + ".");
    }
  }
  return std::nullopt;
}

// Checks a JSON object against a message type before protobuf's parser reads it, so what is
// wrong is said in the caller's words (protobuf's own texts name its internals).
std::optional<std::string> check_message(const Json& value, const gpb::Descriptor& type,
                                         const std::string& path) {
  for (const auto& [key, member] : value.items()) {
    const gpb::FieldDescriptor* field = type.FindFieldByName(key);
    if (field == nullptr) {
      for (int i = 0; i < type.field_count() && field == nullptr; ++i) {
        if (type.field(i)->json_name() == key) field = type.field(i);
      }
    }
    const std::string name = path + key;
    if (field == nullptr) return "unknown field " + in_quotes(name);
    if (member.is_null()) continue;  // the field's default
    if (field->is_map()) {
      if (!member.is_object()) return "field " + in_quotes(name) + ": expected an object";
      const gpb::FieldDescriptor& mapped = *field->message_type()->map_value();
      for (const auto& [map_key, map_value] : member.items()) {
        if (auto problem = check_value(map_value, mapped, name + "." + map_key)) return problem;
      }
      continue;
    }
    if (field->is_repeated()) {
      if (!member.is_array()) {
        return "field " + in_quotes(name) + ": expected " + expected_of(*field, false);
      }
      std::size_t index = 0;
      for (const auto& element : member) {
        const bool message = field->cpp_type() == gpb::FieldDescriptor::CPPTYPE_MESSAGE &&
                             field->message_type()->file()->package() != "google.protobuf";
        if (message && element.is_object()) {
          const std::string at = name + "[" + std::to_string(index) + "].";
          if (auto problem = check_message(element, *field->message_type(), at)) return problem;
        } else if (check_value(element, *field, name)) {
          // The list as a whole is what the caller got wrong: "expected a list of strings".
          return "field " + in_quotes(name) + ": expected " + expected_of(*field, false);
        }
        ++index;
      }
      continue;
    }
    if (auto problem = check_value(member, *field, name)) return problem;
  }
  return std::nullopt;
}

// Parses and checks `data` as JSON for `type`; the problem in plain words, or nullopt.
std::optional<std::string> json_problem(std::string_view data, const gpb::Descriptor& type) {
  Json parsed;
  try {
    parsed = Json::parse(data.begin(), data.end());
  } catch (const Json::parse_error& e) {
    return "malformed JSON (at byte " + std::to_string(e.byte) + ")";
  } catch (const std::exception&) {
    return std::string{"malformed JSON"};
  }
  if (!parsed.is_object()) return std::string{"expected a JSON object"};
  return check_message(parsed, type, "");
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
  if (auto problem = json_problem(data, *out.GetDescriptor())) {
    return invalid_argument(
        fmt::format("invalid {} JSON: {}", out.GetDescriptor()->name(), *problem));
  }
  pbutil::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = pbutil::JsonStringToMessage(data, &out, options);
  if (!status.ok()) {
    // What the check above lets through: a time or number protobuf cannot read. Its own text
    // names protobuf's internals, so it is not passed on.
    out.Clear();
    return invalid_argument(
        fmt::format("invalid {} JSON: a time, number or base64 value is malformed or out of range",
                    out.GetDescriptor()->name()));
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
