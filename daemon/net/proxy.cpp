#include "daemon/net/proxy.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>

#include "daemon/core/ascii.hpp"
#include "daemon/net/url.hpp"

namespace orgd::net {
namespace {

// Percent-decodes into a Secret; the intermediate string is wiped by Secret::take.
Result<Secret> decode_userinfo(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%') {
      if (i + 2 >= text.size()) {
        Secret::take(std::move(out));
        return permanent(invalid_argument("proxy URL has a bad percent-escape in its credentials"));
      }
      const int hi = hex_digit(text[i + 1]);
      const int lo = hex_digit(text[i + 2]);
      if (hi < 0 || lo < 0) {
        Secret::take(std::move(out));
        return permanent(invalid_argument("proxy URL has a bad percent-escape in its credentials"));
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return Secret::take(std::move(out));
}

Secret basic_authorization(const Secret& credentials) {
  const std::string_view raw = credentials.expose();
  std::string encoded(4 * ((raw.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                                reinterpret_cast<const unsigned char*>(raw.data()),
                                static_cast<int>(raw.size()));
  encoded.resize(static_cast<std::size_t>(n));
  std::string value = "Basic " + encoded;
  Secret::take(std::move(encoded));
  return Secret::take(std::move(value));
}

}  // namespace

std::string ProxySettings::display() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

Result<std::shared_ptr<const ProxySettings>> parse_proxy(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  if (text.empty()) return std::shared_ptr<const ProxySettings>{};
  std::string with_scheme;
  if (text.find("://") == std::string_view::npos) {
    with_scheme = "http://" + std::string{text};
  } else {
    with_scheme = std::string{text};
    const std::string scheme = ascii_lowered(text.substr(0, text.find("://")));
    if (scheme != "http") {
      Secret::take(std::move(with_scheme));
      return permanent(invalid_argument("proxy URL scheme '" + scheme +
                                        "' is not supported (an http:// CONNECT proxy)"));
    }
  }
  auto url = parse_url(with_scheme);
  Secret::take(std::move(with_scheme));
  if (!url) {
    return permanent(invalid_argument("proxy URL is not valid: " + url.error().message));
  }
  auto settings = std::make_shared<ProxySettings>();
  settings->host = url.value().host;
  settings->port = url.value().port;
  if (!url.value().userinfo.empty()) {
    auto credentials = decode_userinfo(url.value().userinfo);
    Secret::take(std::move(url.value().userinfo));
    if (!credentials) return credentials.error();
    if (std::string_view{credentials.value().expose()}.find(':') == std::string_view::npos) {
      // curl's habit: a user without a password has an empty one.
      std::string with_colon{credentials.value().expose()};
      with_colon.push_back(':');
      credentials = Secret::take(std::move(with_colon));
    }
    settings->authorization =
        std::make_shared<const Secret>(basic_authorization(credentials.value()));
  }
  return std::shared_ptr<const ProxySettings>{std::move(settings)};
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port) {
  const std::string h = ascii_lowered(host);
  std::size_t i = 0;
  while (i < no_proxy.size()) {
    const auto end = no_proxy.find_first_of(", \t", i);
    std::string entry = ascii_lowered(no_proxy.substr(i, end == std::string_view::npos ? end : end - i));
    i = end == std::string_view::npos ? no_proxy.size() : end + 1;
    if (entry.empty()) continue;
    if (entry == "*") return true;
    // An entry's port: after the last ':' unless the entry is a bare IPv6 literal.
    std::string entry_port;
    if (entry.front() == '[') {
      const auto close = entry.find(']');
      if (close != std::string::npos) {
        if (close + 1 < entry.size() && entry[close + 1] == ':')
          entry_port = entry.substr(close + 2);
        entry = entry.substr(1, close - 1);
      }
    } else if (std::count(entry.begin(), entry.end(), ':') == 1) {
      const auto colon = entry.find(':');
      entry_port = entry.substr(colon + 1);
      entry.resize(colon);
    }
    if (!entry_port.empty() && entry_port != std::to_string(port)) continue;
    if (entry.starts_with("*.")) entry.erase(0, 2);
    if (!entry.empty() && entry.front() == '.') entry.erase(0, 1);
    if (entry.empty()) continue;
    if (h == entry) return true;
    if (!is_ip_literal(h) && h.size() > entry.size() && h.ends_with(entry) &&
        h[h.size() - entry.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

bool use_proxy(const ProxySettings* proxy, std::string_view no_proxy, std::string_view host,
               std::uint16_t port) {
  if (proxy == nullptr) return false;
  if (is_loopback_host(host)) return false;
  return !no_proxy_matches(no_proxy, host, port);
}

}  // namespace orgd::net
