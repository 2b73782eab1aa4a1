#include "daemon/secrets/value_generator.hpp"

#include <sodium.h>

#include <algorithm>
#include <string>

namespace orgd::secrets {
namespace {

constexpr std::string_view kAlphanumeric =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
constexpr std::string_view kHex = "0123456789abcdef";
constexpr std::string_view kBase64Url =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr int kMaxLength = 4096;

}  // namespace

Result<std::string> alphabet_characters(std::string_view alphabet) {
  if (alphabet == "alphanumeric") return std::string{kAlphanumeric};
  if (alphabet == "hex") return std::string{kHex};
  if (alphabet == "base64url") return std::string{kBase64Url};
  std::string distinct;
  for (const char c : alphabet) {
    if (distinct.find(c) == std::string::npos) distinct.push_back(c);
  }
  if (distinct.size() < 16) {
    return invalid_argument(
        "an alphabet is alphanumeric, hex, base64url, or at least 16 distinct characters");
  }
  return distinct;
}

Result<Secret> generate_value(int length, std::string_view alphabet) {
  if (length < 1 || length > kMaxLength) {
    return invalid_argument("a generated value is 1 to " + std::to_string(kMaxLength) +
                            " characters");
  }
  auto characters = alphabet_characters(alphabet);
  if (!characters) return characters.error();
  if (sodium_init() < 0) return internal_error("libsodium failed to initialise");
  // Built in a buffer that is wiped before it is released; Secret::take copies it into locked
  // memory.
  std::string value(static_cast<std::size_t>(length), '\0');
  const auto count = static_cast<std::uint32_t>(characters.value().size());
  for (char& c : value) c = characters.value()[randombytes_uniform(count)];
  return Secret::take(std::move(value));
}

}  // namespace orgd::secrets
