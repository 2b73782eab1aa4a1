#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"

namespace orgd {

// Hot-path JSON for the two messages that dominate the bus: health reports coming in and
// P.api.status replies going out. protobuf's JSON utilities go through a type resolver and a
// node tree per field, which costs more than the NATS round trip itself (docs/performance.md).
// Both functions here are shortcuts that must never change what the wire carries.

// Parses the common flat form of a HealthReport, e.g.
//   {"status":"ok","version":"1.4.2","detail":"…","ttlSeconds":30}
// (any order and subset, JSON whitespace, `ttl_seconds` accepted like protobuf does).
// Returns nullopt for anything outside that simple subset (escapes or non-ASCII in strings,
// unknown or repeated keys, null, non-integer or out-of-range numbers, quoted numbers, nested
// values, enum names other than ok/degraded/down/unknown, trailing bytes): the caller then runs
// the full decoder, which accepts or rejects with a proper message. Whenever a value is
// returned, protobuf's JsonStringToMessage accepts the same input and yields an equal message.
std::optional<v1::HealthReport> fast_decode_health_report(std::string_view json);

// Byte-for-byte the output of encode(message, Encoding::json) with protobuf 3.21: lowerCamelCase
// keys, primitive fields printed at their defaults, enums by value name, unset Timestamps
// omitted, set Timestamps last within their object (where protobuf's printer puts them), map
// entries in the map's iteration order. A message protobuf refuses to print (a Timestamp out of
// range, a string that is not UTF-8) goes through encode() so the reply stays the same.
std::string fast_encode_org_status(const v1::OrgStatus& status);
std::string fast_encode_repo_status(const v1::RepoStatus& status);

// The same document in pieces, for a status too large to build at once (HTTP /status streams
// it): head + each repo (a comma before all but the first) + tail is byte for byte
// fast_encode_org_status of an OrgStatus with those fields.
void fast_append_org_status_head(std::string& out, const std::string& org);
void fast_append_org_status_repo(std::string& out, const v1::RepoStatus& repo, bool first);
void fast_append_org_status_tail(std::string& out, const v1::OrgStatus& fields_after_repos);

}  // namespace orgd
