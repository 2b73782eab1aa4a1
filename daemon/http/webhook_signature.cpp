#include "daemon/http/webhook_signature.hpp"

#include "daemon/core/ascii.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>

namespace orgd {

namespace {

constexpr std::string_view kPrefix = "sha256=";
constexpr std::size_t kDigestBytes = 32;

using Digest = std::array<unsigned char, kDigestBytes>;

Digest hmac_sha256(std::string_view body, const Secret& secret) {
  Digest out{};
  unsigned int size = 0;
  // An empty key is still a key to HMAC; OpenSSL wants a non-null pointer for it.
  static const unsigned char kNoKey = 0;
  const std::string_view key = secret.expose();
  const void* key_bytes = key.empty() ? static_cast<const void*>(&kNoKey) : key.data();
  HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), out.data(), &size);
  return out;
}

}  // namespace

std::string github_signature(std::string_view body, const Secret& secret) {
  static constexpr char kHex[] = "0123456789abcdef";
  const Digest digest = hmac_sha256(body, secret);
  std::string out(kPrefix);
  for (const unsigned char b : digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0x0F]);
  }
  return out;
}

SignatureCheck check_github_signature(std::string_view header, std::string_view body,
                                      const Secret& secret) {
  if (header.empty()) return SignatureCheck::missing;
  if (header.size() != kPrefix.size() + 2 * kDigestBytes ||
      header.substr(0, kPrefix.size()) != kPrefix) {
    return SignatureCheck::malformed;
  }
  Digest claimed{};
  for (std::size_t i = 0; i < kDigestBytes; ++i) {
    const int hi = hex_digit(header[kPrefix.size() + 2 * i]);
    const int lo = hex_digit(header[kPrefix.size() + 2 * i + 1]);
    if (hi < 0 || lo < 0) return SignatureCheck::malformed;
    claimed[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  const Digest expected = hmac_sha256(body, secret);
  return CRYPTO_memcmp(claimed.data(), expected.data(), kDigestBytes) == 0
             ? SignatureCheck::valid
             : SignatureCheck::mismatch;
}

}  // namespace orgd
