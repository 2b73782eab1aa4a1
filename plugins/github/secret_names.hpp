#pragma once

// The checks GitHub applies to Actions secrets, made before any call so a bad name or an
// oversized value fails with a clear error instead of a 422, and the sealing of a value to the
// public key GitHub hands out (cloud-apis.md §1.3).

#include <cstddef>
#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::github {

// GitHub documents "Secrets are limited to 48 KB" without saying whether a KB is 1000 or 1024
// bytes. orgd takes the smaller reading, 48 × 1000 bytes of value: whatever orgd accepts then
// fits under either, and a value in the gap fails here, naming the limit, rather than at GitHub
// with a bare 422.
inline constexpr std::size_t kMaxSecretValueBytes = 48'000;

// The name as GitHub stores it (upper-cased), or invalid_argument (permanent) naming it when it
// is empty, has anything but [A-Za-z0-9_], starts with a digit or with GITHUB_ (in any case).
Result<std::string> normalize_secret_name(std::string_view name);

// invalid_argument (permanent) when the value is empty or longer than kMaxSecretValueBytes; the
// message names the secret and the sizes, never the value.
Result<Ok> check_secret_value(std::string_view name, const Secret& value);

// `value` sealed (crypto_box_seal) to the repository, environment or organization public key
// GitHub returned (`key`, standard base64 of 32 bytes): the base64 `encrypted_value` of a PUT.
// invalid_argument (permanent) when the key is not base64 of 32 bytes.
Result<std::string> seal_for_github(std::string_view public_key_base64, const Secret& value);

}  // namespace orgd::github
