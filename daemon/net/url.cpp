#include "daemon/net/url.hpp"

#include "daemon/core/ascii.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

namespace orgd::net {
namespace {

std::uint16_t default_port(std::string_view scheme) { return scheme == "https" ? 443 : 80; }

bool is_ipv6(std::string_view host) {
  in6_addr addr{};
  return inet_pton(AF_INET6, std::string{host}.c_str(), &addr) == 1;
}

bool is_ipv4(std::string_view host) {
  in_addr addr{};
  return inet_pton(AF_INET, std::string{host}.c_str(), &addr) == 1;
}

}  // namespace

std::string Url::authority() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string Url::host_header() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port == default_port(scheme)) return h;
  return h + ":" + std::to_string(port);
}

std::string Url::redacted() const {
  const auto q = target.find('?');
  return scheme + "://" + host_header() + (q == std::string::npos ? target : target.substr(0, q));
}

Result<Url> parse_url(std::string_view text) {
  Url url;
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    return permanent(invalid_argument("not an absolute URL (no scheme://)"));
  }
  url.scheme = ascii_lowered(text.substr(0, sep));
  if (url.scheme != "http" && url.scheme != "https") {
    return permanent(
        invalid_argument("URL scheme '" + url.scheme + "' is not supported (http or https)"));
  }
  std::string_view rest = text.substr(sep + 3);
  const auto path_at = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_at);
  std::string_view tail = path_at == std::string_view::npos ? "" : rest.substr(path_at);
  if (const auto hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);

  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    url.userinfo = std::string{authority.substr(0, at)};
    authority = authority.substr(at + 1);
  }
  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return permanent(invalid_argument("URL has an unclosed '[' in its host"));
    }
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return permanent(invalid_argument("URL has junk after ']'"));
      port = after.substr(1);
    }
    if (!is_ipv6(host)) return permanent(invalid_argument("URL has a bad IPv6 literal"));
  } else {
    const auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) return permanent(invalid_argument("URL has no host"));
  for (const char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '.' || c == '-' || c == '_' || c == ':')) {
      return permanent(invalid_argument("URL host has a character not allowed in a host name"));
    }
  }
  url.host = ascii_lowered(host);
  if (port.empty()) {
    url.port = default_port(url.scheme);
  } else {
    unsigned value = 0;
    for (const char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || port.size() > 5) {
        return permanent(invalid_argument("URL port '" + std::string{port} + "' is not a number"));
      }
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) {
      return permanent(invalid_argument("URL port " + std::string{port} + " is out of range"));
    }
    url.port = static_cast<std::uint16_t>(value);
  }
  url.target = tail.empty() ? "/" : std::string{tail};
  if (url.target.front() == '?') url.target.insert(0, "/");
  for (const char c : url.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return permanent(invalid_argument("URL path has a space or control character"));
    }
  }
  return url;
}

bool is_loopback_host(std::string_view host) {
  const std::string h = ascii_lowered(host);
  if (h == "localhost" || (h.size() > 10 && h.ends_with(".localhost"))) return true;
  if (h == "::1") return true;
  in_addr addr{};
  if (inet_pton(AF_INET, h.c_str(), &addr) == 1) {
    return (ntohl(addr.s_addr) >> 24) == 127;
  }
  return false;
}

bool is_ip_literal(std::string_view host) { return is_ipv4(host) || is_ipv6(host); }

bool acceptable_api_url(const std::string& url, std::string& why) {
  if (url.rfind("https://", 0) != 0 && url.rfind("http://", 0) != 0) {
    why = "must start with https:// (or http:// for a loopback host)";
    return false;
  }
  if (url.find_first_of("?# \t") != std::string::npos) {
    why = "must not have a query, a fragment or spaces";
    return false;
  }
  auto parsed = parse_url(url);
  if (!parsed) {
    why = parsed.error().message;
    return false;
  }
  if (!parsed.value().userinfo.empty()) {
    why = "must not carry credentials (user:password@)";
    return false;
  }
  if (!parsed.value().tls() && !is_loopback_host(parsed.value().host)) {
    why = "http:// is accepted for loopback hosts only (127.0.0.1, [::1], localhost); use https://";
    return false;
  }
  return true;
}

}  // namespace orgd::net
