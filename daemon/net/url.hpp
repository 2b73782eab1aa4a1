#pragma once

// The absolute URLs the HTTPS client is given, split into what a connection and a request line
// need, and the rule that plain http:// goes to loopback hosts only.

#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"

namespace orgd::net {

struct Url {
  std::string scheme;      // "http" or "https", lower case
  std::string host;        // without brackets for IPv6 literals, lower case
  std::uint16_t port = 0;  // the explicit port, else the scheme's default
  std::string target;      // path?query, "/" when the URL has no path
  std::string userinfo;    // "user:password" before '@' (proxy URLs); empty when absent

  bool tls() const { return scheme == "https"; }
  // host:port, brackets around an IPv6 literal: the CONNECT target, log lines.
  std::string authority() const;
  // The Host header: the port only when it is not the scheme's default.
  std::string host_header() const;
  // scheme://host[:port]/path without the query or user information, for log lines and error
  // messages (a query may carry a token).
  std::string redacted() const;
};

// An absolute http:// or https:// URL; invalid_argument naming what is wrong otherwise. The
// message never repeats user information.
Result<Url> parse_url(std::string_view text);

// 127.0.0.0/8, ::1 and localhost (also "*.localhost"): the hosts plain HTTP may go to and that
// never go through a proxy.
bool is_loopback_host(std::string_view host);

// Whether `url` may be an HTTP provider's api_url (DESIGN.md §8): https://host[:port][/path], or
// http:// to a loopback host; no credentials, query, fragment or spaces. On false, `why` says
// what is wrong (without repeating credentials).
bool acceptable_api_url(const std::string& url, std::string& why);

// An IPv4 or IPv6 literal (certificate checks compare an IP address instead of a name, and no
// SNI is sent).
bool is_ip_literal(std::string_view host);

}  // namespace orgd::net
