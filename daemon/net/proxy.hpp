#pragma once

// HTTPS_PROXY and NO_PROXY as curl and most tools read them: requests go through an HTTP
// CONNECT tunnel to the proxy unless the host is loopback or NO_PROXY names it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::net {

struct ProxySettings {
  std::string host;
  std::uint16_t port = 0;
  // "Basic base64(user:password)" from the proxy URL's user information; null without one.
  std::shared_ptr<const Secret> authorization;
  // host:port, for log lines and errors (never the user information).
  std::string display() const;
};

// An http:// proxy URL ("http://[user:password@]host[:port]", the scheme optional; port
// default 80; percent-escapes in the user information decoded). invalid_argument otherwise,
// never repeating the user information. Empty text: no proxy (a null pointer).
Result<std::shared_ptr<const ProxySettings>> parse_proxy(std::string_view text);

// NO_PROXY: a comma- (or space-) separated list; "*" matches every host; an entry matches a
// host equal to it or ending in "." + it (a leading "." or "*." on the entry is ignored);
// an entry "host:port" matches that port only. Case-insensitive; IP addresses match exactly.
bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port);

// Whether a request to host:port goes through the proxy: never for loopback hosts, never when
// NO_PROXY names the host.
bool use_proxy(const ProxySettings* proxy, std::string_view no_proxy, std::string_view host,
               std::uint16_t port);

}  // namespace orgd::net
