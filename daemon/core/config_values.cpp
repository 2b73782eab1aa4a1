#include "daemon/core/config_values.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace orgd {
namespace {

constexpr std::size_t kMaxNameLength = 100;
constexpr auto kUrlSchemes = std::to_array<std::string_view>({"nats", "tls", "ws", "wss"});

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

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
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

// The URL with any user:password@ replaced, quoted, for messages.
std::string redacted_url(std::string_view url) { return quoted(redact_url(url)); }

}  // namespace

bool contains(Words words, std::string_view word) {
  return std::find(words.begin(), words.end(), word) != words.end();
}

std::string join(Words words) {
  std::string out;
  for (auto word : words) {
    if (!out.empty()) out += ", ";
    out += word;
  }
  return out;
}

std::string printable(std::string_view text, std::size_t max) {
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

std::string shown(std::string_view path, std::string_view value) {
  return is_sensitive(path) ? std::string{"(value hidden)"} : quoted(value);
}

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

bool valid_org(std::string_view org) {
  if (org.empty() || org.size() > kMaxOrgLength || org.front() == '-') return false;
  return std::all_of(org.begin(), org.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

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

std::string redact_url(std::string_view url) {
  const auto scheme = url.find("://");
  const std::size_t host_start = scheme == std::string_view::npos ? 0 : scheme + 3;
  const auto at = url.find('@', host_start);
  const auto slash = url.find('/', host_start);
  if (at == std::string_view::npos || (slash != std::string_view::npos && slash < at)) {
    return std::string(url);
  }
  std::string out{url.substr(0, host_start)};
  out += "***";
  out += url.substr(at);
  return out;
}

std::string redact_urls(const std::vector<std::string>& urls) {
  std::string out;
  for (const auto& url : urls) {
    if (!out.empty()) out += ',';
    out += redact_url(url);
  }
  return out;
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

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxNameLength &&
         std::all_of(name.begin(), name.end(), is_name_char);
}

}  // namespace orgd
