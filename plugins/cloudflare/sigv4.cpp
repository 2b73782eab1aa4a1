#include "plugins/cloudflare/sigv4.hpp"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace orgd::cloudflare::sigv4 {

namespace {

using Digest = std::array<unsigned char, 32>;

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0x0f]);
  }
  return out;
}

// HMAC-SHA256(key, data) into `out`.
void hmac(const unsigned char* key, std::size_t key_size, std::string_view data, Digest& out) {
  unsigned int size = 0;
  HMAC(EVP_sha256(), key, static_cast<int>(key_size),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &size);
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// A header value as SigV4 canonicalizes it: leading and trailing spaces trimmed, runs of
// spaces inside made one.
std::string trimmed(std::string_view value) {
  std::string out;
  bool space = false;
  for (const char c : value) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::string uri_encode(std::string_view text, bool keep_slash) {
  std::string out;
  out.reserve(text.size());
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  Digest digest{};
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest.data());
  return hex(digest.data(), digest.size());
}

std::string canonical_query(const std::vector<std::pair<std::string, std::string>>& query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) {
    encoded.emplace_back(uri_encode(name, false), uri_encode(value, false));
  }
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out.push_back('&');
    out += name + "=" + value;
  }
  return out;
}

std::vector<HttpHeader> wire_headers(const Request& request) {
  std::vector<HttpHeader> out = request.headers;
  out.push_back({"x-amz-content-sha256", request.payload_sha256});
  out.push_back({"x-amz-date", request.amz_date});
  return out;
}

std::string Signature::signature_hex() const {
  const std::string_view text = authorization.expose();
  const auto at = text.rfind("Signature=");
  return at == std::string_view::npos ? std::string{} : std::string{text.substr(at + 10)};
}

Signature sign(const Request& request, std::string_view access_key_id,
               const Secret& secret_access_key) {
  // Canonical headers: host and the wire headers, lower-cased names, sorted; values of one
  // name joined by commas.
  std::vector<std::pair<std::string, std::string>> headers{{"host", trimmed(request.host)}};
  for (const auto& h : wire_headers(request)) headers.emplace_back(lower(h.name), trimmed(h.value));
  std::stable_sort(headers.begin(), headers.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string canonical_headers, signed_headers;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (i > 0 && headers[i].first == headers[i - 1].first) {
      canonical_headers.pop_back();  // the '\n'
      canonical_headers += "," + headers[i].second + "\n";
      continue;
    }
    canonical_headers += headers[i].first + ":" + headers[i].second + "\n";
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers += headers[i].first;
  }

  Signature out;
  out.signed_headers = signed_headers;
  out.canonical_request = request.method + "\n" + request.encoded_path + "\n" +
                          canonical_query(request.query) + "\n" + canonical_headers + "\n" +
                          signed_headers + "\n" + request.payload_sha256;
  const std::string date = request.amz_date.substr(0, 8);
  out.credential_scope = date + "/" + request.region + "/" + request.service + "/aws4_request";
  out.string_to_sign = std::string{kAlgorithm} + "\n" + request.amz_date + "\n" +
                       out.credential_scope + "\n" + sha256_hex(out.canonical_request);

  // The key chain. "AWS4" + secret is built in a Secret (reserved up front: no reallocation
  // leaves a copy), the intermediate keys are wiped.
  std::string first;
  first.reserve(4 + secret_access_key.size());
  first.append("AWS4").append(secret_access_key.expose());
  const Secret seed = Secret::take(std::move(first));
  Digest k_date{}, k_region{}, k_service{}, k_signing{}, signature{};
  hmac(reinterpret_cast<const unsigned char*>(seed.expose().data()), seed.size(), date, k_date);
  hmac(k_date.data(), k_date.size(), request.region, k_region);
  hmac(k_region.data(), k_region.size(), request.service, k_service);
  hmac(k_service.data(), k_service.size(), "aws4_request", k_signing);
  hmac(k_signing.data(), k_signing.size(), out.string_to_sign, signature);
  for (Digest* d : {&k_date, &k_region, &k_service, &k_signing})
    OPENSSL_cleanse(d->data(), d->size());

  out.authorization = Secret::take(
      fmt::format("{} Credential={}/{}, SignedHeaders={}, Signature={}", kAlgorithm, access_key_id,
                  out.credential_scope, signed_headers, hex(signature.data(), signature.size())));
  return out;
}

}  // namespace orgd::cloudflare::sigv4
