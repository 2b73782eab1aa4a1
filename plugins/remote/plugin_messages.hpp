#pragma once

// The wire side of remote providers (proto/orgd/v1/plugin.proto): target settings from YAML to
// the google.protobuf.Struct they travel as, requests encoded as JSON, replies decoded (an
// error reply, a malformed or oversized one told apart from an answer), and the error body's
// codes mapped to orgd's error kinds and retry policy.

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"
#include "orgd/v1/plugin.pb.h"

namespace orgd::remote {

// A YAML value as JSON: maps (string keys) to objects, sequences to lists, quoted scalars to
// strings, plain scalars resolved as YAML 1.2's core schema does (null/~, true/false, numbers;
// anything else a string). False, with `why` naming the key path, for what JSON cannot hold (a
// non-scalar or duplicate key, .inf/.nan). `path` names the node in messages.
bool yaml_to_value(const YAML::Node& node, const std::string& path, google::protobuf::Value& out,
                   std::string& why);

// The settings map of a target: every key of `settings` but those in `orgd_keys`. Problems are
// appended to `problems` as "<path>.<key>: <why>" with the key's line (via `report`).
struct SettingsProblem {
  int line = 0;
  std::string path;
  std::string message;
};
google::protobuf::Struct settings_struct(const YAML::Node& settings, const std::string& path,
                                         int line, const std::vector<std::string>& orgd_keys,
                                         std::vector<SettingsProblem>& problems);

// The JSON of a request (proto3 JSON mapping, lowerCamelCase).
std::string encode_request(const google::protobuf::Message& request);

// Why a reply was not an answer, for counting.
enum class ReplyFault { none, error_reply, malformed };

// Decodes the reply of `op` into `out`. An error body ({"error":{...}}) becomes the Error it
// maps to (error_reply); more than `max_bytes`, invalid UTF-8, JSON that is not an object or
// whose fields have the wrong types become an internal error naming what is wrong (malformed).
// Unknown fields are ignored, so a newer provider may answer with more. An empty payload reads
// as {}. Never throws. `who` starts every message ("remote provider ext: deploy.start").
Result<Ok> decode_reply(std::string_view payload, std::size_t max_bytes, const std::string& who,
                        google::protobuf::Message& out, ReplyFault& fault);

// The orgd Error of an error body (see PluginErrorReply in plugin.proto).
Error map_plugin_error(const v1::PluginErrorReply::Error& error, const std::string& who);

// Standard base64 (not secret: keys, sealed values); nullopt when `text` is not base64.
std::string to_base64(std::string_view bytes);
std::optional<std::string> from_base64(std::string_view text);

}  // namespace orgd::remote
