#pragma once

#include <google/protobuf/message.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"

namespace orgd {

// Wire encodings (DESIGN.md §5): the proto3 JSON mapping by default, binary protobuf when the
// message carries `Content-Type: application/protobuf`. A reply uses the request's encoding.
enum class Encoding { json, protobuf };

inline constexpr std::string_view kContentTypeHeader = "Content-Type";
inline constexpr std::string_view kProtobufContentType = "application/protobuf";
inline constexpr std::string_view kJsonContentType = "application/json";

Encoding encoding_from_content_type(std::string_view content_type);
std::string_view content_type(Encoding encoding);

// Decodes `data` into `out` (which is cleared first). An empty payload decodes to the message's
// defaults. Fails with invalid_argument, naming the problem, on: more than `max_bytes`, invalid
// UTF-8 or NUL bytes in JSON, malformed JSON, unknown fields, wrong types, unknown enum names,
// malformed binary protobuf. Never throws. The common flat HealthReport JSON takes a direct
// parser that yields what protobuf's parser would; anything else takes protobuf's.
Result<Ok> decode(std::string_view data, Encoding encoding, google::protobuf::Message& out,
                  std::size_t max_bytes);

// Encodes `message`. JSON uses lowerCamelCase names and prints fields at their default values,
// so "health":"unknown" and "stale":false are always present. The hot replies (OrgStatus,
// RepoStatus) go through direct writers that produce the same bytes.
std::string encode(const google::protobuf::Message& message, Encoding encoding);

// protobuf's own JSON printer with the options above, without orgd's fast paths: the reference
// the fast writers (events/fast_json.hpp) must match, and their fallback.
std::string encode_generic_json(const google::protobuf::Message& message);

// The body of an error reply: {"error":{"code":"invalid_argument","message":"…"}} in JSON, or
// the ErrorReply message in binary.
std::string encode_error(const Error& error, Encoding encoding);

// Builds the descriptors of every orgd message up front. protobuf builds them lazily on first use
// behind a std::call_once inside libprotobuf, which ThreadSanitizer cannot see into; doing it once
// before any thread starts keeps that first use off the hot paths and the sanitizer quiet.
void preload_descriptors();

// NATS subject token rules for names that become subject tokens (repos, services, orgs):
// [A-Za-z0-9_-], 1..128 characters.
bool valid_subject_token(std::string_view token);

// True when `text` is well-formed UTF-8 with no NUL byte.
bool valid_utf8(std::string_view text);

}  // namespace orgd
