#include "daemon/events/fast_json.hpp"

#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <limits>

#include "daemon/events/codec.hpp"
#include "daemon/events/utf8.hpp"

namespace orgd {
namespace {

// ---------------------------------------------------------------------------------------------
// Decoding: a strict reader of one flat object. Every doubt is a nullopt, never an error: the
// full decoder behind it owns the error messages.

class FlatReader {
 public:
  explicit FlatReader(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  void skip_whitespace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool consume(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  bool at_end() const { return p_ == end_; }

  // A quoted string of printable ASCII without escapes. Anything else (escapes, control or
  // non-ASCII bytes) needs the full decoder's UTF-8 and escape handling.
  std::optional<std::string_view> plain_string() {
    if (!consume('"')) return std::nullopt;
    const char* start = p_;
    while (p_ < end_) {
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        std::string_view value(start, static_cast<std::size_t>(p_ - start));
        ++p_;
        return value;
      }
      if (c < 0x20 || c > 0x7e || c == '\\') return std::nullopt;
      ++p_;
    }
    return std::nullopt;
  }

  // An int32 written the plain JSON way: optional minus, no leading zeros, no fraction or
  // exponent. "-0" is left to the full decoder too.
  std::optional<std::int32_t> plain_int32() {
    bool negative = consume('-');
    const char* start = p_;
    std::int64_t value = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      if (p_ - start >= 10) return std::nullopt;  // past int32 in any case; keeps value bounded
      value = value * 10 + (*p_ - '0');
      ++p_;
    }
    auto digits = p_ - start;
    if (digits == 0 || (digits > 1 && *start == '0') || (negative && value == 0)) {
      return std::nullopt;
    }
    if (negative) value = -value;
    if (value < std::numeric_limits<std::int32_t>::min() ||
        value > std::numeric_limits<std::int32_t>::max()) {
      return std::nullopt;
    }
    return static_cast<std::int32_t>(value);
  }

 private:
  const char* p_;
  const char* end_;
};

enum class ReportField : unsigned { status = 1, version = 2, detail = 4, ttl_seconds = 8 };

std::optional<ReportField> report_field(std::string_view key) {
  if (key == "status") return ReportField::status;
  if (key == "version") return ReportField::version;
  if (key == "detail") return ReportField::detail;
  // protobuf's parser takes the JSON name and the proto name alike.
  if (key == "ttlSeconds" || key == "ttl_seconds") return ReportField::ttl_seconds;
  return std::nullopt;
}

std::optional<v1::Health::Status> health_status(std::string_view name) {
  if (name == "ok") return v1::Health::ok;
  if (name == "degraded") return v1::Health::degraded;
  if (name == "down") return v1::Health::down;
  if (name == "unknown") return v1::Health::unknown;
  return std::nullopt;
}

// Reads one value of `field` into `report`; false when it is not the plain form.
bool read_report_value(FlatReader& in, ReportField field, v1::HealthReport& report) {
  if (field == ReportField::ttl_seconds) {
    auto ttl = in.plain_int32();
    if (!ttl) return false;
    report.set_ttl_seconds(*ttl);
    return true;
  }
  auto text = in.plain_string();
  if (!text) return false;
  switch (field) {
    case ReportField::status: {
      auto status = health_status(*text);
      if (!status) return false;
      report.set_status(*status);
      return true;
    }
    case ReportField::version:
      report.set_version(text->data(), text->size());
      return true;
    case ReportField::detail:
      report.set_detail(text->data(), text->size());
      return true;
    case ReportField::ttl_seconds:
      break;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Encoding: what protobuf 3.21's JSON printer writes, checked code point by code point against
// it (tests/unit/fast_json_test.cpp).

constexpr std::array<bool, 128> ascii_escapes() {
  std::array<bool, 128> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = true;
  // '<' and '>' are escaped by protobuf for embedding in HTML; DEL as a control character.
  for (char c : {'"', '\\', '<', '>', '\x7f'}) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr auto kAsciiEscapes = ascii_escapes();

// Non-ASCII code points protobuf writes as \u escapes: C1 controls and invisible format
// characters (soft hyphen, bidi marks, zero-width characters, tags, ...).
bool escaped_code_point(std::uint32_t cp) {
  if (cp < 0xa0) return true;  // C1 controls (callers pass cp >= 0x80)
  if (cp < 0x600) return cp == 0xad;
  if (cp < 0x2000) {
    return (cp >= 0x600 && cp <= 0x603) || cp == 0x6dd || cp == 0x70f || cp == 0x17b4 ||
           cp == 0x17b5;
  }
  if (cp < 0x10000) {
    return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x206a && cp <= 0x206f) || cp == 0xfeff ||
           (cp >= 0xfff9 && cp <= 0xfffb);
  }
  return (cp >= 0x1d173 && cp <= 0x1d17a) || cp == 0xe0001 || (cp >= 0xe0020 && cp <= 0xe007f);
}

void append_hex4(std::string& out, std::uint32_t unit) {
  constexpr char kHex[] = "0123456789abcdef";
  char buf[6] = {'\\',
                 'u',
                 kHex[(unit >> 12) & 0xf],
                 kHex[(unit >> 8) & 0xf],
                 kHex[(unit >> 4) & 0xf],
                 kHex[unit & 0xf]};
  out.append(buf, sizeof buf);
}

void append_escaped_code_point(std::string& out, std::uint32_t cp) {
  switch (cp) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\t':
      out += "\\t";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\r':
      out += "\\r";
      return;
    default:
      break;
  }
  if (cp > 0xffff) {
    cp -= 0x10000;
    append_hex4(out, 0xd800 + (cp >> 10));
    append_hex4(out, 0xdc00 + (cp & 0x3ff));
    return;
  }
  append_hex4(out, cp);
}

// Appends `text` as a JSON string; false when it is not UTF-8 (protobuf refuses to print it).
bool append_string(std::string& out, std::string_view text) {
  out.push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  const auto* run = p;  // start of bytes copied verbatim
  auto flush = [&] {
    out.append(reinterpret_cast<const char*>(run), static_cast<std::size_t>(p - run));
  };
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      if (kAsciiEscapes[c]) {
        flush();
        append_escaped_code_point(out, c);
        run = p + 1;
      }
      ++p;
      continue;
    }
    std::uint32_t cp;
    int length = decode_utf8_sequence(p, end, cp);
    if (length == 0) return false;
    if (escaped_code_point(cp)) {
      flush();
      append_escaped_code_point(out, cp);
      run = p + length;
    }
    p += length;
  }
  flush();
  out.push_back('"');
  return true;
}

// Enum value names are identifiers and need no escaping. A value the schema does not name
// (an open proto3 enum) prints as its number, like protobuf does.
void append_enum(std::string& out, const std::string& name, int value) {
  if (name.empty()) {
    out += std::to_string(value);
    return;
  }
  out.push_back('"');
  out += name;
  out.push_back('"');
}

void append_digits(char* at, unsigned value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    at[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protobuf's TimeUtil prints; false
// outside 0001-01-01..9999-12-31 or with nanos outside [0, 1e9), which protobuf refuses.
bool append_timestamp(std::string& out, const google::protobuf::Timestamp& ts) {
  constexpr std::int64_t kMinSeconds = -62135596800;  // 0001-01-01T00:00:00Z
  constexpr std::int64_t kMaxSeconds = 253402300799;  // 9999-12-31T23:59:59Z
  std::int64_t seconds = ts.seconds();
  std::int32_t nanos = ts.nanos();
  if (seconds < kMinSeconds || seconds > kMaxSeconds || nanos < 0 || nanos > 999999999) {
    return false;
  }
  std::int64_t days = seconds / 86400;
  std::int64_t second_of_day = seconds % 86400;
  if (second_of_day < 0) {
    second_of_day += 86400;
    --days;
  }
  // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted).
  std::int64_t z = days + 719468;
  std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  auto doe = static_cast<unsigned>(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  unsigned day = doy - (153 * mp + 2) / 5 + 1;
  unsigned month = mp < 10 ? mp + 3 : mp - 9;
  auto year = static_cast<unsigned>(static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2));

  char buf[32] = "\"0000-00-00T00:00:00";
  append_digits(buf + 1, year, 4);
  append_digits(buf + 6, month, 2);
  append_digits(buf + 9, day, 2);
  auto sod = static_cast<unsigned>(second_of_day);
  append_digits(buf + 12, sod / 3600, 2);
  append_digits(buf + 15, sod / 60 % 60, 2);
  append_digits(buf + 18, sod % 60, 2);
  std::size_t length = 20;
  if (nanos != 0) {
    buf[length++] = '.';
    auto n = static_cast<unsigned>(nanos);
    if (n % 1000000 == 0) {
      append_digits(buf + length, n / 1000000, 3);
      length += 3;
    } else if (n % 1000 == 0) {
      append_digits(buf + length, n / 1000, 6);
      length += 6;
    } else {
      append_digits(buf + length, n, 9);
      length += 9;
    }
  }
  buf[length++] = 'Z';
  buf[length++] = '"';
  out.append(buf, length);
  return true;
}

void append_bool(std::string& out, bool value) { out += value ? "true" : "false"; }

// Field order follows protobuf's printer: declared order, except that set Timestamps come after
// the fields printed at their defaults, i.e. last.

bool append_service(std::string& out, const v1::ServiceStatus& service) {
  out += "{\"name\":";
  if (!append_string(out, service.name())) return false;
  out += ",\"status\":";
  append_enum(out, v1::Health::Status_Name(service.status()), service.status());
  out += ",\"version\":";
  if (!append_string(out, service.version())) return false;
  out += ",\"stale\":";
  append_bool(out, service.stale());
  if (service.has_last_report_at()) {
    out += ",\"lastReportAt\":";
    if (!append_timestamp(out, service.last_report_at())) return false;
  }
  out.push_back('}');
  return true;
}

bool append_deploy(std::string& out, const v1::DeploySummary& deploy) {
  out += "{\"deployId\":";
  if (!append_string(out, deploy.deploy_id())) return false;
  out += ",\"state\":";
  append_enum(out, v1::DeployRecord::State_Name(deploy.state()), deploy.state());
  out += ",\"ref\":";
  if (!append_string(out, deploy.ref())) return false;
  if (deploy.has_finished_at()) {
    out += ",\"finishedAt\":";
    if (!append_timestamp(out, deploy.finished_at())) return false;
  }
  out.push_back('}');
  return true;
}

bool append_repo(std::string& out, const v1::RepoStatus& repo) {
  out += "{\"name\":";
  if (!append_string(out, repo.name())) return false;
  out += ",\"health\":";
  append_enum(out, v1::Health::Status_Name(repo.health()), repo.health());
  out += ",\"services\":[";
  bool first = true;
  for (const auto& service : repo.services()) {
    if (!first) out.push_back(',');
    first = false;
    if (!append_service(out, service)) return false;
  }
  out += "],\"deploys\":{";
  first = true;
  // protobuf serializes a map in its iteration order and prints entries as they come.
  for (const auto& [env, deploy] : repo.deploys()) {
    if (!first) out.push_back(',');
    first = false;
    if (!append_string(out, env)) return false;
    out.push_back(':');
    if (!append_deploy(out, deploy)) return false;
  }
  out += "}}";
  return true;
}

// A first guess at the reply size, so a large reply is built without repeated growth.
std::size_t size_hint(const v1::RepoStatus& repo) {
  return 64 + repo.name().size() + 128 * static_cast<std::size_t>(repo.services_size()) +
         160 * repo.deploys().size();
}

bool append_org(std::string& out, const v1::OrgStatus& status) {
  out += "{\"org\":";
  if (!append_string(out, status.org())) return false;
  out += ",\"repos\":[";
  bool first = true;
  for (const auto& repo : status.repos()) {
    if (!first) out.push_back(',');
    first = false;
    if (!append_repo(out, repo)) return false;
  }
  out.push_back(']');
  // Where protobuf's printer puts them (primitive fields always printed, before the message
  // field generatedAt).
  out += ",\"nextCursor\":";
  if (!append_string(out, status.next_cursor())) return false;
  out += fmt::format(",\"totalRepos\":{}", status.total_repos());
  if (status.has_generated_at()) {
    out += ",\"generatedAt\":";
    if (!append_timestamp(out, status.generated_at())) return false;
  }
  out.push_back('}');
  return true;
}

}  // namespace

std::optional<v1::HealthReport> fast_decode_health_report(std::string_view json) {
  FlatReader in(json);
  v1::HealthReport report;
  unsigned seen = 0;
  in.skip_whitespace();
  if (!in.consume('{')) return std::nullopt;
  in.skip_whitespace();
  if (!in.consume('}')) {
    while (true) {
      auto key = in.plain_string();
      if (!key) return std::nullopt;
      auto field = report_field(*key);
      if (!field) return std::nullopt;
      auto bit = static_cast<unsigned>(*field);
      if ((seen & bit) != 0) return std::nullopt;
      seen |= bit;
      in.skip_whitespace();
      if (!in.consume(':')) return std::nullopt;
      in.skip_whitespace();
      if (!read_report_value(in, *field, report)) return std::nullopt;
      in.skip_whitespace();
      if (in.consume(',')) {
        in.skip_whitespace();
        continue;
      }
      if (in.consume('}')) break;
      return std::nullopt;
    }
  }
  in.skip_whitespace();
  if (!in.at_end()) return std::nullopt;
  return report;
}

std::string fast_encode_org_status(const v1::OrgStatus& status) {
  std::size_t hint = 64 + status.org().size();
  for (const auto& repo : status.repos()) hint += size_hint(repo);
  std::string out;
  out.reserve(hint);
  if (!append_org(out, status)) return encode_generic_json(status);
  return out;
}

void fast_append_org_status_head(std::string& out, const std::string& org) {
  std::string fast = "{\"org\":";
  if (append_string(fast, org)) {
    out += fast;
  } else {
    // What protobuf prints up to the repos of an OrgStatus holding only this org.
    v1::OrgStatus only_org;
    only_org.set_org(org);
    const std::string generic = encode_generic_json(only_org);
    out.append(generic, 0, generic.find(",\"repos\":["));
  }
  out += ",\"repos\":[";
}

void fast_append_org_status_repo(std::string& out, const v1::RepoStatus& repo, bool first) {
  if (!first) out.push_back(',');
  const std::size_t mark = out.size();
  if (!append_repo(out, repo)) {
    out.resize(mark);
    out += encode_generic_json(repo);
  }
}

void fast_append_org_status_tail(std::string& out, const v1::OrgStatus& fields_after_repos) {
  v1::OrgStatus tail = fields_after_repos;
  tail.clear_org();
  tail.clear_repos();
  std::string org;
  if (!append_org(org, tail)) {
    org = encode_generic_json(tail);
  }
  // `{"org":"","repos":[]` then the fields after the repos.
  const auto after_repos = org.find("],");
  if (after_repos == std::string::npos) {
    out += "]}";  // protobuf refused to print it too
    return;
  }
  out.append(org, after_repos);
}

std::string fast_encode_repo_status(const v1::RepoStatus& status) {
  std::string out;
  out.reserve(size_hint(status));
  if (!append_repo(out, status)) return encode_generic_json(status);
  return out;
}

}  // namespace orgd
