#include "plugins/remote/plugin_messages.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "daemon/core/config_values.hpp"
#include "daemon/core/yaml_schema.hpp"
#include "daemon/events/codec.hpp"

namespace orgd::remote {

namespace {

// Deeper settings than this are refused (the config loader bounds depth too; this keeps the
// conversion's recursion bounded on its own).
constexpr int kMaxDepth = 32;
// An error message from a provider is cut to this, control characters escaped.
constexpr std::size_t kMaxMessage = 300;
// retry_after beyond this is taken as this.
constexpr std::chrono::milliseconds kMaxRetryAfter = std::chrono::hours{1};

bool is_integer(std::string_view t) {
  if (!t.empty() && (t[0] == '-' || t[0] == '+')) t.remove_prefix(1);
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool is_float(std::string_view t) {
  std::size_t i = 0;
  if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
  std::size_t digits = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++digits;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
    std::size_t exp = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == t.size();
}

bool scalar_to_value(const YAML::Node& node, const std::string& path, google::protobuf::Value& out,
                     std::string& why) {
  const std::string& text = node.Scalar();
  // "!" is a quoted (or otherwise non-plain) scalar: a string whatever it looks like.
  if (node.Tag() != "?") {
    out.set_string_value(text);
    return true;
  }
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    out.set_null_value(google::protobuf::NULL_VALUE);
  } else if (text == "true" || text == "True" || text == "TRUE") {
    out.set_bool_value(true);
  } else if (text == "false" || text == "False" || text == "FALSE") {
    out.set_bool_value(false);
  } else if (is_integer(text) || is_float(text)) {
    errno = 0;
    const double number = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE || !std::isfinite(number)) {
      why = path + ": " + quoted(text) + " is out of range for a JSON number";
      return false;
    }
    out.set_number_value(number);
  } else if (text == ".inf" || text == "-.inf" || text == ".nan" || text == ".Inf" ||
             text == ".NaN" || text == "+.inf") {
    why = path + ": infinity and NaN cannot be sent as JSON";
    return false;
  } else {
    out.set_string_value(text);
  }
  return true;
}

bool convert(const YAML::Node& node, const std::string& path, int depth,
             google::protobuf::Value& out, std::string& why) {
  if (depth > kMaxDepth) {
    why = path + ": nested too deeply";
    return false;
  }
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out.set_null_value(google::protobuf::NULL_VALUE);
      return true;
    case YAML::NodeType::Scalar:
      return scalar_to_value(node, path, out, why);
    case YAML::NodeType::Sequence: {
      auto* list = out.mutable_list_value();
      std::size_t i = 0;
      for (const auto& item : node) {
        if (!convert(item, fmt::format("{}[{}]", path, i++), depth + 1, *list->add_values(), why)) {
          return false;
        }
      }
      return true;
    }
    case YAML::NodeType::Map: {
      auto* fields = out.mutable_struct_value()->mutable_fields();
      for (const auto& item : node) {
        if (!item.first.IsScalar()) {
          why = path + ": map keys must be strings";
          return false;
        }
        const std::string key = item.first.Scalar();
        if (fields->count(key) != 0) {
          why = path + "." + key + ": key given twice";
          return false;
        }
        if (!convert(item.second, path + "." + key, depth + 1, (*fields)[key], why)) return false;
      }
      return true;
    }
  }
  return true;
}

}  // namespace

bool yaml_to_value(const YAML::Node& node, const std::string& path, google::protobuf::Value& out,
                   std::string& why) {
  return convert(node, path, 0, out, why);
}

google::protobuf::Struct settings_struct(const YAML::Node& settings, const std::string& path,
                                         int line, const std::vector<std::string>& orgd_keys,
                                         std::vector<SettingsProblem>& problems) {
  google::protobuf::Struct out;
  if (!settings || settings.IsNull()) return out;
  if (!settings.IsMap()) {
    problems.push_back({line, path, "expected a map of settings"});
    return out;
  }
  const std::set<std::string> skip(orgd_keys.begin(), orgd_keys.end());
  for (const auto& item : settings) {
    if (!item.first.IsScalar()) {
      problems.push_back({line_of(item.first, line), path, "map keys must be strings"});
      continue;
    }
    const std::string key = item.first.Scalar();
    if (skip.count(key) != 0) continue;
    std::string why;
    google::protobuf::Value value;
    if (!yaml_to_value(item.second, path + "." + key, value, why)) {
      // `why` starts with the path of the offending node.
      const auto colon = why.find(": ");
      problems.push_back({line_of(item.second, line_of(item.first, line)), why.substr(0, colon),
                          colon == std::string::npos ? why : why.substr(colon + 2)});
      continue;
    }
    (*out.mutable_fields())[key] = std::move(value);
  }
  return out;
}

std::string encode_request(const google::protobuf::Message& request) {
  return encode_generic_json(request);
}

Result<Ok> decode_reply(std::string_view payload, std::size_t max_bytes, const std::string& who,
                        google::protobuf::Message& out, ReplyFault& fault) {
  fault = ReplyFault::none;
  out.Clear();
  const auto malformed = [&](std::string what) -> Error {
    fault = ReplyFault::malformed;
    return internal_error(who + ": malformed reply: " + std::move(what));
  };
  if (payload.size() > max_bytes) {
    return malformed(fmt::format("{} bytes, more than the {} accepted", payload.size(), max_bytes));
  }
  if (!valid_utf8(payload)) return malformed("not UTF-8 text (or holds NUL bytes)");
  std::string_view body = payload;
  while (!body.empty() && (body.front() == ' ' || body.front() == '\n' || body.front() == '\r' ||
                           body.front() == '\t')) {
    body.remove_prefix(1);
  }
  if (body.empty()) body = "{}";
  if (body.front() != '{') return malformed("not a JSON object");

  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  v1::PluginErrorReply error;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &error, options);
  if (!status.ok()) {
    return malformed(printable(std::string(status.message()), kMaxMessage));
  }
  if (error.has_error()) {
    fault = ReplyFault::error_reply;
    return map_plugin_error(error.error(), who);
  }
  status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &out, options);
  if (!status.ok()) {
    return malformed(printable(std::string(status.message()), kMaxMessage));
  }
  return Ok{};
}

Error map_plugin_error(const v1::PluginErrorReply::Error& error, const std::string& who) {
  const std::string& code = error.code();
  const std::string message = fmt::format(
      "{}: {} ({})", who,
      error.message().empty() ? std::string{"failed"} : printable(error.message(), kMaxMessage),
      code.empty() ? std::string{"no code"} : printable(code, 40));
  const auto after = std::chrono::milliseconds{
      std::clamp<std::int64_t>(error.retry_after_ms(), 0, kMaxRetryAfter.count())};
  if (code == "invalid_argument") return permanent(invalid_argument(message));
  if (code == "not_found") return permanent(not_found(message));
  if (code == "conflict") return permanent(conflict(message));
  if (code == "rate_limited") {
    return rate_limited(message, after.count() > 0 ? after : std::chrono::seconds{1});
  }
  if (code == "unavailable") {
    if (after.count() > 0) return rate_limited(message, after);
    return unavailable(message);
  }
  // internal, and codes orgd does not know: the provider's fault, perhaps passing.
  return internal_error(message);
}

std::string to_base64(std::string_view bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the NUL sodium writes
  return out;
}

std::optional<std::string> from_base64(std::string_view text) {
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t length = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &length, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(length);
  return out;
}

}  // namespace orgd::remote
