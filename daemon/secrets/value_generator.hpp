#pragma once

// Random secret values for rotation (secrets.rotation.<name>.generate): `length` characters
// drawn uniformly from an alphabet with libsodium's randombytes_uniform (no modulo bias), made
// straight into Secret memory.

#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::secrets {

// The characters of an alphabet setting: a named set (alphanumeric, hex, base64url) or the
// characters themselves, each once. invalid_argument for fewer than 16 distinct characters.
Result<std::string> alphabet_characters(std::string_view alphabet);

// A new random value; invalid_argument for a bad alphabet or a length outside [1, 4096].
Result<Secret> generate_value(int length, std::string_view alphabet);

}  // namespace orgd::secrets
