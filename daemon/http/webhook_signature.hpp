#pragma once

// GitHub's webhook signature (cloud-apis.md §1.6): X-Hub-Signature-256 is "sha256=" and the
// lower-case hex HMAC-SHA256 of the raw body under the hook's secret.

#include <string>
#include <string_view>

#include "daemon/core/secret.hpp"

namespace orgd {

enum class SignatureCheck { valid, missing, malformed, mismatch };

// "sha256=<hex>" for `body` under `secret` (what GitHub sends; tests sign with it).
std::string github_signature(std::string_view body, const Secret& secret);

// Checks an X-Hub-Signature-256 value against one secret. The digests are compared with
// CRYPTO_memcmp, so the time taken says nothing about how much of a forged signature matched.
// Upper-case hex is accepted too; anything but "sha256=" and 64 hex digits is malformed.
SignatureCheck check_github_signature(std::string_view header, std::string_view body,
                                      const Secret& secret);

}  // namespace orgd
