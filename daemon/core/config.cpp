#include "daemon/core/config.hpp"

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string_view>
#include <utility>

#include "daemon/core/errors.hpp"
#include "daemon/deploy/planner.hpp"

namespace orgd {
namespace {

// Bounds that keep a hostile or broken file from costing more than a moment to reject.
constexpr std::size_t kMaxFileBytes = 4 * 1024 * 1024;
// Deeper than any valid config; an alias that refers to its own ancestor (&a [*a]) makes a cycle,
// which this bound also stops.
constexpr int kMaxDepth = 32;
// Nodes visited with aliases expanded (stops "billion laughs" documents).
constexpr std::size_t kMaxNodes = 100'000;
constexpr std::size_t kMaxProblems = 100;
constexpr std::size_t kMaxNameLength = 100;
constexpr std::size_t kMaxOrgLength = 63;

// A fixed list of allowed words; an empty list in mapping() means any key.
using Keys = std::span<const std::string_view>;

constexpr auto kTopKeys = std::to_array<std::string_view>(
    {"org", "nats", "http", "log", "providers", "repos", "secrets", "deploy"});
constexpr auto kDeployKeys =
    std::to_array<std::string_view>({"parallel", "max_active", "on_failure", "lease_ttl",
                                     "history", "step_timeout", "retries", "retry_backoff",
                                     "health_gate"});
constexpr auto kHealthGateKeys = std::to_array<std::string_view>({"enabled", "timeout", "soak"});
constexpr auto kFailurePolicies = std::to_array<std::string_view>({"stop", "rollback"});
constexpr auto kNatsKeys = std::to_array<std::string_view>(
    {"embedded", "urls", "data_dir", "server_binary", "creds_file", "nkey_file", "token",
     "token_env", "user", "password_env", "jwt_env", "nkey_seed_env", "tls", "subject_prefix",
     "replicas", "connect_timeout", "reconnect_wait", "max_payload"});
constexpr auto kTlsKeys = std::to_array<std::string_view>({"ca_file", "cert_file", "key_file"});
constexpr auto kHttpKeys = std::to_array<std::string_view>(
    {"listen", "enabled", "body_limit", "header_timeout", "read_timeout", "write_timeout"});
constexpr auto kLogKeys = std::to_array<std::string_view>({"level", "format"});
constexpr auto kRepoKeys =
    std::to_array<std::string_view>({"depends_on", "deploy", "secrets", "health"});
constexpr auto kHealthKeys = std::to_array<std::string_view>({"services", "ttl"});
constexpr auto kSecretsKeys =
    std::to_array<std::string_view>({"master_key_file", "master_key_env"});
constexpr auto kLogLevels =
    std::to_array<std::string_view>({"trace", "debug", "info", "warn", "error", "critical", "off"});
constexpr auto kLogFormats = std::to_array<std::string_view>({"text", "json"});
constexpr auto kProviderTypes =
    std::to_array<std::string_view>({"github", "cloudflare", "synadia", "exec", "local", "remote"});
constexpr auto kUrlSchemes = std::to_array<std::string_view>({"nats", "tls", "ws", "wss"});

bool contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

std::string join(Keys keys) {
  std::string out;
  for (auto key : keys) {
    if (!out.empty()) out += ", ";
    out += key;
  }
  return out;
}

// Text from the file, made safe for a one-line message: control characters escaped, long text
// cut short.
std::string printable(std::string_view text, std::size_t max = 64) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i == max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string quoted(std::string_view text) { return "\"" + printable(text) + "\""; }

// Keys whose values may be secret: never echoed back in a message.
bool is_sensitive(std::string_view path) {
  const auto dot = path.rfind('.');
  const std::string_view key = dot == std::string_view::npos ? path : path.substr(dot + 1);
  for (std::string_view word : {"token", "password", "seed", "secret", "key"}) {
    if (key.find(word) != std::string_view::npos && !key.ends_with("_env") &&
        !key.ends_with("_file")) {
      return true;
    }
  }
  return false;
}

// The value as it may appear in a message about `path`.
std::string shown(std::string_view path, std::string_view value) {
  return is_sensitive(path) ? std::string{"(value hidden)"} : quoted(value);
}

std::string kind_of(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

bool valid_org(std::string_view org) {
  if (org.empty() || org.size() > kMaxOrgLength || org.front() == '-') return false;
  return std::all_of(org.begin(), org.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

// A subject of literal tokens: no wildcards, no empty tokens, no spaces or control characters.
std::optional<std::string> subject_problem(std::string_view subject) {
  if (subject.empty()) return "must not be empty";
  std::size_t start = 0;
  while (true) {
    const auto dot = subject.find('.', start);
    const std::string_view token =
        subject.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (token.empty()) return "has an empty token (leading, trailing or double dot)";
    if (token == "*" || token == ">" || token.find_first_of("*>") != std::string_view::npos) {
      return "must not contain wildcards (* or >)";
    }
    for (char c : token) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) return "must not contain spaces or control characters";
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return std::nullopt;
}

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

// The URL with any user:password@ replaced, for messages.
std::string redacted_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  const std::size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const auto at = url.find('@', authority);
  if (at == std::string_view::npos) return quoted(url);
  std::string out{url.substr(0, authority)};
  out += "***";
  out += url.substr(at);
  return quoted(out);
}

std::optional<std::string> url_problem(std::string_view url) {
  if (url.empty()) return "empty URL";
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return fmt::format("URL {} contains spaces or control characters", redacted_url(url));
    }
  }
  const auto scheme_end = url.find("://");
  if (scheme_end != std::string_view::npos) {
    if (!contains(kUrlSchemes, url.substr(0, scheme_end))) {
      return fmt::format("URL {} has an unsupported scheme (expected one of: {})",
                         redacted_url(url), join(kUrlSchemes));
    }
    if (scheme_end + 3 == url.size()) {
      return fmt::format("URL {} has no host", redacted_url(url));
    }
  }
  return std::nullopt;
}

std::vector<std::string> split_urls(std::string_view text) {
  std::vector<std::string> urls;
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    const auto part = trim(text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    urls.emplace_back(part);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return urls;
}

bool valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
  });
}

bool valid_ipv6_text(std::string_view addr) {
  if (addr.empty() || addr.size() > 64 || addr.find(':') == std::string_view::npos) return false;
  const auto zone = addr.find('%');
  const std::string_view ip = addr.substr(0, zone);
  if (!std::all_of(ip.begin(), ip.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
               c == ':' || c == '.';
      })) {
    return false;
  }
  if (zone == std::string_view::npos) return true;
  const std::string_view zone_id = addr.substr(zone + 1);
  return !zone_id.empty() && valid_host_name(zone_id);
}

// "host:port" or "[v6]:port"; on success fills host (without brackets) and port.
std::optional<std::string> listen_problem(std::string_view text, std::string& host,
                                          std::uint16_t& port) {
  std::string_view host_part;
  std::string_view port_part;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    host_part = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return "expected host:port, e.g. [::1]:8080";
    }
    port_part = text.substr(close + 2);
    if (!valid_ipv6_text(host_part)) return "invalid IPv6 address";
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return "expected host:port, e.g. 127.0.0.1:8080";
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
    if (host_part.empty()) return "missing host (use 0.0.0.0:PORT to listen on every interface)";
    if (host_part.find(':') != std::string_view::npos) {
      return "an IPv6 address needs brackets, e.g. [::1]:8080";
    }
    if (!valid_host_name(host_part)) return "invalid host";
  }
  if (port_part.empty() || port_part.size() > 5 ||
      !std::all_of(port_part.begin(), port_part.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return "invalid port (expected 0..65535)";
  }
  unsigned value = 0;
  std::from_chars(port_part.data(), port_part.data() + port_part.size(), value);
  if (value > 65535) return "invalid port (expected 0..65535)";
  host.assign(host_part);
  port = static_cast<std::uint16_t>(value);
  return std::nullopt;
}

std::optional<bool> parse_bool(std::string_view text) {
  std::string lower;
  for (char c : text) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "true" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "no" || lower == "off") return false;
  return std::nullopt;
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  if (text.starts_with('+')) text.remove_prefix(1);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// An integer number of bytes, optionally with a binary unit: 1048576, 512KiB, 1MiB (K/KB/M/MB/G/GB
// are read as binary units too, as nats-server does).
std::optional<std::int64_t> parse_bytes(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  const auto number = parse_int(text.substr(0, digits));
  if (!number) return std::nullopt;
  const std::string_view unit = trim(text.substr(digits));
  std::int64_t scale = 0;
  if (unit.empty() || unit == "B") {
    scale = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KiB") {
    scale = std::int64_t{1} << 10;
  } else if (unit == "M" || unit == "MB" || unit == "MiB") {
    scale = std::int64_t{1} << 20;
  } else if (unit == "G" || unit == "GB" || unit == "GiB") {
    scale = std::int64_t{1} << 30;
  } else {
    return std::nullopt;
  }
  std::int64_t result = 0;
  if (__builtin_mul_overflow(*number, scale, &result)) return std::nullopt;
  return result;
}

std::string bytes_text(std::int64_t bytes) {
  if (bytes % (1 << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes % (1 << 10) == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} bytes", bytes);
}

int line_of(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return fallback;
  return mark.line + 1;
}

std::string child_path(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string{key};
  return path + "." + std::string{key};
}

// One key: value pair of a YAML map.
struct Entry {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
  std::string path;    // dotted, e.g. "nats.tls.ca_file"
  int line = 0;        // of the key
  int value_line = 0;  // of the value (the key's when the value has no position)
};

// A dependency as written, checked once every repo is known.
struct PendingDependency {
  std::string repo;
  std::string dependency;
  std::string path;
  int line = 0;
};

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  Config load(const std::string& text, const Environment& env) {
    Config config;
    config.source = source_;
    YAML::Node root;
    try {
      count_documents(text);
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      report(e.mark.is_null() ? 0 : e.mark.line + 1, "", "YAML syntax error: " + e.msg);
      fail();
    }
    if (!problems_.empty()) fail();
    if (root.IsNull()) {
      report(1, "",
             fmt::format("the file is empty (expected a map with keys: {})", join(kTopKeys)));
      fail();
    }
    if (!check_shape(root)) fail();

    try {
      load_root(root, config);
    } catch (const YAML::Exception& e) {
      // Every access above is guarded; this is a last line of defence for yaml-cpp surprises.
      report(e.mark.is_null() ? 0 : e.mark.line + 1, "", "invalid YAML: " + e.msg);
    }
    apply_environment(env, config);
    check_combinations(config);
    if (!problems_.empty()) fail();
    return config;
  }

 private:
  [[noreturn]] void fail() {
    // In file order (the loader visits providers before repos); environment problems last.
    std::stable_sort(problems_.begin(), problems_.end(),
                     [](const Problem& a, const Problem& b) { return a.order < b.order; });
    std::vector<std::string> lines;
    for (auto& p : problems_) {
      if (lines.size() == kMaxProblems) {
        lines.push_back(
            fmt::format("{}: ... and {} more problems", source_, problems_.size() - kMaxProblems));
        break;
      }
      lines.push_back(std::move(p.text));
    }
    throw ConfigError(std::move(lines));
  }

  void report(int line, std::string_view path, std::string_view message) {
    std::string text = source_;
    if (line > 0) text += fmt::format(":{}", line);
    text += ": ";
    if (!path.empty()) {
      text += printable(path, 200);
      text += ": ";
    }
    text += message;
    problems_.push_back({line, std::move(text)});
  }

  void report_env(std::string_view variable, std::string_view message) {
    problems_.push_back(
        {std::numeric_limits<int>::max(), fmt::format("environment: {}: {}", variable, message)});
  }

  // Reports a second document. yaml-cpp 0.7's LoadAll() never returns on some inputs (a stray ','
  // at the top level yields empty documents forever without consuming it), so the documents are
  // walked here with a bound and only the first one is loaded.
  void count_documents(const std::string& text) {
    class DocumentStarts : public YAML::EventHandler {
     public:
      std::vector<YAML::Mark> marks;
      void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
      void OnDocumentEnd() override {}
      void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
      void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
      void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    const std::string&) override {}
      void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                           YAML::EmitterStyle::value) override {}
      void OnSequenceEnd() override {}
      void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                      YAML::EmitterStyle::value) override {}
      void OnMapEnd() override {}
    };
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts starts;
    while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
    }
    if (starts.marks.size() < 2) return;
    const YAML::Mark& first = starts.marks[0];
    const YAML::Mark& second = starts.marks[1];
    if (second.pos == first.pos) {
      // The parser made no progress: a token it cannot place, which it would repeat forever.
      report(first.line + 1, "", "YAML syntax error: unexpected character");
    } else if (second.pos >= 0 && static_cast<std::size_t>(second.pos) < text.size() &&
               text.compare(static_cast<std::size_t>(second.pos), 3, "---") == 0) {
      report(second.line + 1, "",
             "more than one YAML document ('---'): a config is a single document");
    } else {
      report(second.line + 1, "", "YAML syntax error: unexpected text after the document");
    }
  }

  // Walks the whole document once, without recursion, so that later code may recurse freely.
  bool check_shape(const YAML::Node& root) {
    std::vector<std::pair<YAML::Node, int>> stack;
    stack.emplace_back(root, 0);
    std::size_t visited = 0;
    while (!stack.empty()) {
      auto [node, depth] = std::move(stack.back());
      stack.pop_back();
      if (++visited > kMaxNodes) {
        report(line_of(node, 0), "",
               fmt::format("the document is too large: more than {} nodes once aliases are "
                           "expanded",
                           kMaxNodes));
        return false;
      }
      if (depth > kMaxDepth) {
        report(line_of(node, 0), "",
               fmt::format("nested deeper than {} levels (or an alias refers to its own parent)",
                           kMaxDepth));
        return false;
      }
      if (node.IsMap()) {
        for (const auto& kv : node) {
          stack.emplace_back(kv.first, depth + 1);
          stack.emplace_back(kv.second, depth + 1);
        }
      } else if (node.IsSequence()) {
        for (const auto& item : node) stack.emplace_back(item, depth + 1);
      }
    }
    return true;
  }

  // The entries of a map with string keys, each key once. With `allowed`, other keys are
  // reported. Null counts as an empty map. nullopt (reported) when the node is something else.
  std::optional<std::vector<Entry>> mapping(const YAML::Node& node, const std::string& path,
                                            int line, Keys allowed) {
    std::vector<Entry> entries;
    if (!node.IsDefined() || node.IsNull()) return entries;
    if (!node.IsMap()) {
      report(line_of(node, line), path, "expected a map, got " + kind_of(node));
      return std::nullopt;
    }
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      const int key_line = line_of(key, line_of(node, line));
      if (!key.IsScalar()) {
        report(key_line, path, "map keys must be strings, got " + kind_of(key));
        continue;
      }
      Entry entry;
      entry.key = key.Scalar();
      entry.key_node = key;
      entry.value = kv.second;
      entry.path = child_path(path, entry.key);
      entry.line = key_line;
      // A missing value (null) is positioned at the next token, often on a later line.
      entry.value_line = entry.value.IsNull() ? key_line : line_of(entry.value, key_line);
      if (!allowed.empty() && !contains(allowed, entry.key)) {
        report(key_line, entry.path,
               fmt::format("unknown key (expected one of: {})", join(allowed)));
        continue;
      }
      const auto first = std::find_if(entries.begin(), entries.end(),
                                      [&](const Entry& e) { return e.key == entry.key; });
      if (first != entries.end()) {
        report(key_line, entry.path, fmt::format("duplicate key (first at line {})", first->line));
        continue;
      }
      entries.push_back(std::move(entry));
    }
    return entries;
  }

  std::optional<std::string> scalar(const Entry& e, std::string_view expected) {
    if (e.value.IsScalar()) return e.value.Scalar();
    report(e.value_line, e.path, fmt::format("expected {}, got {}", expected, kind_of(e.value)));
    return std::nullopt;
  }

  void read_string(const Entry& e, std::string& out, bool allow_empty = true) {
    auto text = scalar(e, "a string");
    if (!text) return;
    if (!allow_empty && text->empty()) {
      report(e.value_line, e.path, "must not be empty");
      return;
    }
    out = std::move(*text);
  }

  void read_bool(const Entry& e, bool& out) {
    auto text = scalar(e, "true or false");
    if (!text) return;
    if (auto value = parse_bool(*text)) {
      out = *value;
    } else {
      report(e.value_line, e.path,
             fmt::format("expected true or false, got {}", shown(e.path, *text)));
    }
  }

  void read_int(const Entry& e, std::int64_t min, std::int64_t max, int& out) {
    auto text = scalar(e, "an integer");
    if (!text) return;
    const auto value = parse_int(*text);
    if (!value) {
      report(e.value_line, e.path,
             fmt::format("expected an integer, got {}", shown(e.path, *text)));
    } else if (*value < min || *value > max) {
      report(e.value_line, e.path,
             fmt::format("must be between {} and {}, got {}", min, max, *value));
    } else {
      out = static_cast<int>(*value);
    }
  }

  void read_bytes(const Entry& e, std::int64_t min, std::int64_t max, std::int64_t& out) {
    auto text = scalar(e, "a size in bytes");
    if (!text) return;
    const auto value = parse_bytes(*text);
    if (!value) {
      report(e.value_line, e.path,
             fmt::format("expected a size in bytes such as 1048576 or 1MiB, got {}",
                         shown(e.path, *text)));
    } else if (*value < min || *value > max) {
      report(e.value_line, e.path,
             fmt::format("must be between {} and {}", bytes_text(min), bytes_text(max)));
    } else {
      out = *value;
    }
  }

  void read_duration(const Entry& e, bool allow_zero, Duration& out) {
    auto text = scalar(e, "a duration");
    if (!text) return;
    const auto value = parse_duration(*text);
    if (!value) {
      report(e.value_line, e.path,
             fmt::format("invalid duration {} (expected e.g. 500ms, 30s, 5m, 2h, 1m30s)",
                         shown(e.path, *text)));
    } else if (!allow_zero && value->count() == 0) {
      report(e.value_line, e.path, "must be longer than zero");
    } else {
      out = *value;
    }
  }

  void read_choice(const Entry& e, Keys choices, std::string& out) {
    auto text = scalar(e, "a string");
    if (!text) return;
    if (contains(choices, *text)) {
      out = std::move(*text);
    } else {
      report(e.value_line, e.path,
             fmt::format("invalid value {} (expected one of: {})", shown(e.path, *text),
                         join(choices)));
    }
  }

  // A list of strings (null = empty), each with its line.
  std::vector<std::pair<std::string, int>> read_list(const Entry& e) {
    std::vector<std::pair<std::string, int>> items;
    if (e.value.IsNull()) return items;
    if (!e.value.IsSequence()) {
      report(e.value_line, e.path, "expected a list of strings, got " + kind_of(e.value));
      return items;
    }
    for (const auto& item : e.value) {
      const int line = line_of(item, e.value_line);
      if (!item.IsScalar()) {
        report(line, e.path, "expected a list of strings, got an item that is " + kind_of(item));
        continue;
      }
      items.emplace_back(item.Scalar(), line);
    }
    return items;
  }

  // A list of names ([A-Za-z0-9_-]+), each once.
  std::vector<std::string> read_names(const Entry& e, std::string_view what) {
    std::vector<std::string> names;
    for (auto& [name, line] : read_list(e)) {
      if (!valid_name(name)) {
        report(line, e.path,
               fmt::format("invalid {} name {} (expected [A-Za-z0-9_-]+)", what, quoted(name)));
      } else if (std::find(names.begin(), names.end(), name) != names.end()) {
        report(line, e.path, fmt::format("{} {} is listed twice", what, quoted(name)));
      } else {
        names.push_back(std::move(name));
      }
    }
    return names;
  }

  void load_root(const YAML::Node& root, Config& config) {
    auto entries = mapping(root, "", 1, kTopKeys);
    if (!entries) return;
    auto find = [&](std::string_view key) -> const Entry* {
      for (const auto& e : *entries) {
        if (e.key == key) return &e;
      }
      return nullptr;
    };
    // Providers before repos, whatever the order in the file: targets name providers.
    if (const Entry* e = find("org")) load_org(*e, config);
    if (const Entry* e = find("nats")) load_nats(*e, config.nats);
    if (const Entry* e = find("http")) load_http(*e, config.http);
    if (const Entry* e = find("log")) load_log(*e, config.log);
    if (const Entry* e = find("secrets")) load_secrets(*e, config.secrets);
    if (const Entry* e = find("deploy")) load_deploy_settings(*e, config.deploy);
    if (const Entry* e = find("providers")) load_providers(*e, config.providers);
    if (const Entry* e = find("repos")) load_repos(*e, config);
  }

  void load_org(const Entry& e, Config& config) {
    auto text = scalar(e, "a string");
    if (!text) return;
    if (!valid_org(*text)) {
      report(e.value_line, e.path,
             fmt::format("invalid org {} (expected lower-case letters, digits and '-', starting "
                         "with a letter or digit, at most {} characters)",
                         quoted(*text), kMaxOrgLength));
      return;
    }
    config.org = std::move(*text);
  }

  void load_nats(const Entry& section, NatsConfig& nats) {
    nats_line_ = section.line;
    auto entries = mapping(section.value, section.path, section.value_line, kNatsKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      const std::string& k = e.key;
      if (k == "embedded") {
        read_bool(e, nats.embedded);
      } else if (k == "urls") {
        load_urls(e, nats.urls);
      } else if (k == "data_dir") {
        read_string(e, nats.data_dir, false);
      } else if (k == "server_binary") {
        read_string(e, nats.server_binary, false);
      } else if (k == "creds_file") {
        read_string(e, nats.creds_file);
      } else if (k == "nkey_file") {
        read_string(e, nats.nkey_file);
      } else if (k == "token") {
        read_string(e, nats.token);
      } else if (k == "token_env") {
        read_string(e, nats.token_env);
      } else if (k == "user") {
        read_string(e, nats.user);
      } else if (k == "password_env") {
        read_string(e, nats.password_env);
      } else if (k == "jwt_env") {
        read_string(e, nats.jwt_env);
      } else if (k == "nkey_seed_env") {
        read_string(e, nats.nkey_seed_env);
      } else if (k == "tls") {
        load_tls(e, nats.tls);
      } else if (k == "subject_prefix") {
        load_subject_prefix(e, nats.subject_prefix);
      } else if (k == "replicas") {
        read_int(e, 1, 5, nats.replicas);
      } else if (k == "connect_timeout") {
        read_duration(e, false, nats.connect_timeout);
      } else if (k == "reconnect_wait") {
        read_duration(e, true, nats.reconnect_wait);
      } else if (k == "max_payload") {
        read_bytes(e, 1024, 8 * 1024 * 1024, nats.max_payload);
      }
    }
  }

  void load_urls(const Entry& e, std::vector<std::string>& out) {
    std::vector<std::pair<std::string, int>> items;
    if (e.value.IsScalar()) {
      for (auto& url : split_urls(e.value.Scalar()))
        items.emplace_back(std::move(url), e.value_line);
    } else if (e.value.IsSequence()) {
      items = read_list(e);
    } else {
      report(e.value_line, e.path,
             "expected a list of URLs or a comma-separated string, got " + kind_of(e.value));
      return;
    }
    std::vector<std::string> urls;
    bool ok = true;
    for (auto& [url, line] : items) {
      const std::string text{trim(url)};
      if (auto problem = url_problem(text)) {
        report(line, e.path, *problem);
        ok = false;
      } else {
        urls.push_back(text);
      }
    }
    if (ok && urls.empty()) {
      report(e.value_line, e.path, "needs at least one URL");
      return;
    }
    if (ok) out = std::move(urls);
  }

  void load_tls(const Entry& section, TlsConfig& tls) {
    tls_line_ = section.line;
    auto entries = mapping(section.value, section.path, section.value_line, kTlsKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      if (e.key == "ca_file") read_string(e, tls.ca_file);
      if (e.key == "cert_file") read_string(e, tls.cert_file);
      if (e.key == "key_file") read_string(e, tls.key_file);
    }
  }

  void load_subject_prefix(const Entry& e, std::string& out) {
    auto text = scalar(e, "a string");
    if (!text) return;
    if (auto problem = subject_problem(*text)) {
      report(e.value_line, e.path,
             fmt::format("invalid subject prefix {}: {}", quoted(*text), *problem));
      return;
    }
    out = std::move(*text);
  }

  void load_http(const Entry& section, HttpConfig& http) {
    auto entries = mapping(section.value, section.path, section.value_line, kHttpKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      if (e.key == "listen") {
        auto text = scalar(e, "a string host:port");
        if (!text) continue;
        std::string host;
        std::uint16_t port = 0;
        if (auto problem = listen_problem(*text, host, port)) {
          report(e.value_line, e.path,
                 fmt::format("invalid listen address {}: {}", quoted(*text), *problem));
        } else {
          http.host = std::move(host);
          http.port = port;
        }
      } else if (e.key == "enabled") {
        read_bool(e, http.enabled);
      } else if (e.key == "body_limit") {
        read_bytes(e, 1024, std::int64_t{256} * 1024 * 1024, http.body_limit);
      } else if (e.key == "header_timeout") {
        read_duration(e, false, http.header_timeout);
      } else if (e.key == "read_timeout") {
        read_duration(e, false, http.read_timeout);
      } else if (e.key == "write_timeout") {
        read_duration(e, false, http.write_timeout);
      }
    }
  }

  void load_log(const Entry& section, LogConfig& log) {
    auto entries = mapping(section.value, section.path, section.value_line, kLogKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      if (e.key == "level") read_choice(e, kLogLevels, log.level);
      if (e.key == "format") read_choice(e, kLogFormats, log.format);
    }
  }

  void load_secrets(const Entry& section, SecretsConfig& secrets) {
    secrets_line_ = section.line;
    auto entries = mapping(section.value, section.path, section.value_line, kSecretsKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      if (e.key == "master_key_file") read_string(e, secrets.master_key_file);
      if (e.key == "master_key_env") read_string(e, secrets.master_key_env);
    }
  }

  void load_deploy_settings(const Entry& section, DeployConfig& deploy) {
    auto entries = mapping(section.value, section.path, section.value_line, kDeployKeys);
    if (!entries) return;
    StepPolicyOverrides step;
    for (const Entry& e : *entries) {
      if (e.key == "parallel") {
        read_int(e, 1, 64, deploy.parallel);
      } else if (e.key == "max_active") {
        read_int(e, 1, 256, deploy.max_active);
      } else if (e.key == "on_failure") {
        read_choice(e, kFailurePolicies, deploy.on_failure);
      } else if (e.key == "lease_ttl") {
        read_duration(e, false, deploy.lease_ttl);
        if (deploy.lease_ttl < std::chrono::seconds{1}) {
          report(e.value_line, e.path, "must be at least 1s");
          deploy.lease_ttl = std::chrono::seconds{1};
        }
      } else if (e.key == "history") {
        read_duration(e, false, deploy.history);
      } else {
        read_step_override(e, step);
      }
    }
    deploy.step = step.apply(deploy.step);
  }

  // step_timeout, retries, retry_backoff and health_gate, in deploy: or in a target; other keys
  // are left alone.
  void read_step_override(const Entry& e, StepPolicyOverrides& out) {
    if (e.key == "step_timeout") {
      Duration value{};
      read_duration(e, false, value);
      if (value.count() > 0) out.step_timeout = value;
    } else if (e.key == "retries") {
      int value = -1;
      read_int(e, 0, 10, value);
      if (value >= 0) out.retries = value;
    } else if (e.key == "retry_backoff") {
      Duration value{-1};
      read_duration(e, true, value);
      if (value.count() >= 0) out.retry_backoff = value;
    } else if (e.key == "health_gate") {
      // `health_gate: false` turns the gate off; a map sets its parts and turns it on (also
      // where deploy: turned it off), unless it says `enabled: false`: whoever writes
      // `health_gate: {soak: 5s}` means a gate that soaks for 5s.
      if (e.value.IsScalar()) {
        bool enabled = true;
        read_bool(e, enabled);
        out.health_gate_enabled = enabled;
        return;
      }
      auto fields = mapping(e.value, e.path, e.value_line, kHealthGateKeys);
      if (!fields) return;
      out.health_gate_enabled = true;
      for (const Entry& f : *fields) {
        if (f.key == "enabled") {
          bool enabled = true;
          read_bool(f, enabled);
          out.health_gate_enabled = enabled;
        } else {
          Duration value{-1};
          read_duration(f, f.key == "soak", value);
          if (value.count() < 0) continue;
          if (f.key == "timeout") out.health_gate_timeout = value;
          if (f.key == "soak") out.health_gate_soak = value;
        }
      }
    }
  }

  void load_providers(const Entry& section, std::map<std::string, ProviderConfig>& providers) {
    auto entries = mapping(section.value, section.path, section.value_line, Keys{});
    if (!entries) return;
    for (const Entry& p : *entries) {
      declared_providers_.insert(p.key);
      if (!valid_name(p.key)) {
        report(p.line, p.path, "invalid provider name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      if (p.value.IsNull()) {
        report(p.value_line, p.path,
               fmt::format("expected a map with a type (one of: {})", join(kProviderTypes)));
        continue;
      }
      auto fields = mapping(p.value, p.path, p.value_line, Keys{});
      if (!fields) continue;
      ProviderConfig provider;
      provider.name = p.key;
      provider.line = p.line;
      const auto type = std::find_if(fields->begin(), fields->end(),
                                     [](const Entry& e) { return e.key == "type"; });
      if (type == fields->end()) {
        report(p.line, p.path + ".type",
               fmt::format("required key missing (one of: {})", join(kProviderTypes)));
        continue;
      }
      read_choice(*type, kProviderTypes, provider.type);
      if (provider.type.empty()) continue;
      // The map as written (the provider's reader skips `type`): a copy without it would merge
      // yaml-cpp's node memory of the whole document into each new map, quadratic in its size.
      provider.settings = p.value;
      providers.emplace(p.key, std::move(provider));
    }
  }

  void load_repos(const Entry& section, Config& config) {
    auto entries = mapping(section.value, section.path, section.value_line, Keys{});
    if (!entries) return;
    std::vector<PendingDependency> dependencies;
    for (const Entry& r : *entries) {
      if (!valid_name(r.key)) {
        report(r.line, r.path, "invalid repo name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      auto fields = mapping(r.value, r.path, r.value_line, kRepoKeys);
      if (!fields) continue;
      RepoConfig repo;
      repo.name = r.key;
      repo.line = r.line;
      for (const Entry& e : *fields) {
        if (e.key == "depends_on") {
          for (auto& [dependency, line] : read_list(e)) {
            if (std::find(repo.depends_on.begin(), repo.depends_on.end(), dependency) !=
                repo.depends_on.end()) {
              report(line, e.path, fmt::format("repo {} is listed twice", quoted(dependency)));
              continue;
            }
            dependencies.push_back({repo.name, dependency, e.path, line});
            repo.depends_on.push_back(std::move(dependency));
          }
        } else if (e.key == "deploy") {
          load_deploy(e, repo.deploy);
        } else if (e.key == "secrets") {
          repo.secrets = read_names(e, "secret");
        } else if (e.key == "health") {
          load_health(e, repo.health);
        }
      }
      config.repos.emplace(repo.name, std::move(repo));
    }
    // Reported against the repos as written, so a repo whose own block had errors still counts.
    for (const auto& d : dependencies) {
      if (d.dependency == d.repo) {
        report(d.line, d.path, "a repo cannot depend on itself");
      } else if (std::none_of(entries->begin(), entries->end(),
                              [&](const Entry& e) { return e.key == d.dependency; })) {
        report(d.line, d.path, fmt::format("unknown repo {}", quoted(d.dependency)));
      }
    }
    report_cycle(config);
  }

  // Over the repos that loaded, in file order so the cycle starts at the repo written first.
  // Self-dependencies are reported above and unknown ones are ignored by find_cycle.
  void report_cycle(const Config& config) {
    std::vector<const RepoConfig*> repos;
    for (const auto& [name, repo] : config.repos) repos.push_back(&repo);
    std::stable_sort(repos.begin(), repos.end(),
                     [](const RepoConfig* a, const RepoConfig* b) { return a->line < b->line; });
    std::vector<RepoNode> nodes;
    nodes.reserve(repos.size());
    for (const RepoConfig* repo : repos) {
      RepoNode node{repo->name, {}};
      for (const auto& dependency : repo->depends_on) {
        if (dependency != repo->name) node.depends_on.push_back(dependency);
      }
      nodes.push_back(std::move(node));
    }
    const auto cycle = find_cycle(nodes);
    if (!cycle) return;
    const RepoConfig& first = config.repos.at(cycle->front());
    report(first.line, fmt::format("repos.{}.depends_on", first.name),
           "dependency cycle: " + describe_cycle(*cycle));
  }

  void load_deploy(const Entry& section, std::map<std::string, DeployTargetConfig>& targets) {
    auto entries = mapping(section.value, section.path, section.value_line, Keys{});
    if (!entries) return;
    for (const Entry& t : *entries) {
      if (!valid_name(t.key)) {
        report(t.line, t.path, "invalid environment name (expected [A-Za-z0-9_-]+)");
        continue;
      }
      if (t.value.IsNull()) {
        report(t.value_line, t.path, "expected a map with a provider");
        continue;
      }
      auto fields = mapping(t.value, t.path, t.value_line, Keys{});
      if (!fields) continue;
      const auto provider = std::find_if(fields->begin(), fields->end(),
                                         [](const Entry& e) { return e.key == "provider"; });
      if (provider == fields->end()) {
        report(t.line, t.path + ".provider", "required key missing (the name of a provider)");
        continue;
      }
      std::string name;
      read_string(*provider, name);
      if (name.empty()) {
        if (provider->value.IsScalar())
          report(provider->value_line, provider->path, "must not be empty");
        continue;
      }
      if (declared_providers_.count(name) == 0) {
        report(provider->value_line, provider->path,
               fmt::format("unknown provider {} (declare it under providers:)", quoted(name)));
        continue;
      }
      DeployTargetConfig target;
      target.env = t.key;
      target.provider = std::move(name);
      target.line = t.line;
      for (const Entry& f : *fields) read_step_override(f, target.policy);
      target.settings = t.value;  // the provider's reader skips the reserved keys
      targets.emplace(t.key, std::move(target));
    }
  }

  void load_health(const Entry& section, RepoHealthConfig& health) {
    auto entries = mapping(section.value, section.path, section.value_line, kHealthKeys);
    if (!entries) return;
    for (const Entry& e : *entries) {
      if (e.key == "services") health.services = read_names(e, "service");
      if (e.key == "ttl") read_duration(e, false, health.ttl);
    }
  }

  // DESIGN.md §7: the names the org already uses for NATS, and ORGD_HTTP_LISTEN.
  void apply_environment(const Environment& env, Config& config) {
    auto non_empty = [&](const char* name) -> std::optional<std::string> {
      auto value = env.get(name);
      if (!value || trim(*value).empty()) return std::nullopt;
      return value;
    };
    NatsConfig& nats = config.nats;

    // NATS_URLS wins over NATS_URL when both are set.
    for (const char* name : {"NATS_URLS", "NATS_URL"}) {
      auto value = non_empty(name);
      if (!value) continue;
      std::vector<std::string> urls;
      bool ok = true;
      for (auto& url : split_urls(*value)) {
        if (auto problem = url_problem(url)) {
          report_env(name, *problem);
          ok = false;
        } else {
          urls.push_back(std::move(url));
        }
      }
      if (ok) {
        nats.urls = std::move(urls);
        nats.embedded = false;
      }
      break;
    }
    if (auto value = non_empty("NATS_CREDS_FILE")) nats.creds_file = *value;
    if (auto value = non_empty("NATS_NKEY_FILE")) nats.nkey_file = *value;

    // Only the variables' names are kept: their values are secrets, read when connecting.
    const bool has_jwt = non_empty("NATS_JWT").has_value();
    const bool has_seed = non_empty("NATS_NKEY_SEED").has_value();
    if (has_jwt && has_seed) {
      nats.jwt_env = "NATS_JWT";
      nats.nkey_seed_env = "NATS_NKEY_SEED";
    } else if (has_jwt) {
      report_env("NATS_JWT", "is set without NATS_NKEY_SEED (a user JWT needs its seed)");
    } else if (has_seed) {
      report_env("NATS_NKEY_SEED", "is set without NATS_JWT (set both, or use NATS_NKEY_FILE)");
    }

    if (auto value = non_empty("NATS_TLS_CA_FILE")) nats.tls.ca_file = *value;
    if (auto value = non_empty("NATS_TLS_CERT_FILE")) nats.tls.cert_file = *value;
    if (auto value = non_empty("NATS_TLS_KEY_FILE")) nats.tls.key_file = *value;

    if (auto value = non_empty("ORGD_HTTP_LISTEN")) {
      std::string host;
      std::uint16_t port = 0;
      const std::string text{trim(*value)};
      if (auto problem = listen_problem(text, host, port)) {
        report_env("ORGD_HTTP_LISTEN",
                   fmt::format("invalid listen address {}: {}", quoted(text), *problem));
      } else {
        config.http.host = std::move(host);
        config.http.port = port;
      }
    }
  }

  // Settings that only make sense together, checked once file and environment are merged.
  void check_combinations(const Config& config) {
    const NatsConfig& nats = config.nats;
    if (nats.tls.cert_file.empty() != nats.tls.key_file.empty()) {
      report(tls_line_, "nats.tls",
             "cert_file and key_file go together (a client certificate needs its key)");
    }
    if (!nats.token.empty() && !nats.token_env.empty()) {
      report(nats_line_, "nats", "set only one of token and token_env");
    }
    if (nats.jwt_env.empty() != nats.nkey_seed_env.empty()) {
      report(nats_line_, "nats", "jwt_env and nkey_seed_env go together");
    }
    if (!config.secrets.master_key_file.empty() && !config.secrets.master_key_env.empty()) {
      report(secrets_line_, "secrets", "set only one of master_key_file and master_key_env");
    }
  }

  std::string source_;
  struct Problem {
    int order = 0;  // the line, 0 when the problem has none
    std::string text;
  };
  std::vector<Problem> problems_;
  // Every provider name declared, valid or not, so a target naming a provider whose own block
  // had problems is not reported a second time.
  std::set<std::string> declared_providers_;
  int nats_line_ = 0;
  int tls_line_ = 0;
  int secrets_line_ = 0;
};

}  // namespace

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxNameLength &&
         std::all_of(name.begin(), name.end(), is_name_char);
}

Config load_config_string(const std::string& text, const std::string& source_name,
                          const Environment& env) {
  if (text.size() > kMaxFileBytes) {
    throw ConfigError(
        {fmt::format("{}: the file is larger than {} MiB", source_name, kMaxFileBytes >> 20)});
  }
  try {
    return Loader{source_name}.load(text, env);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    // yaml-cpp may throw more than YAML::Exception on odd input; it is still a config problem.
    throw ConfigError({fmt::format("{}: cannot parse: {}", source_name, printable(e.what(), 200))});
  }
}

Config load_config_file(const std::string& path, const Environment& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError({fmt::format("{}: cannot open: {}", path, std::strerror(errno))});
  }
  std::string text;
  char buffer[64 * 1024];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxFileBytes) {
      throw ConfigError(
          {fmt::format("{}: the file is larger than {} MiB", path, kMaxFileBytes >> 20)});
    }
  }
  if (in.bad()) throw ConfigError({fmt::format("{}: cannot read", path)});
  return load_config_string(text, path, env);
}

}  // namespace orgd
