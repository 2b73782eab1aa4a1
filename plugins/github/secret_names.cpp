#include "plugins/github/secret_names.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <cctype>
#include <vector>

namespace orgd::github {

namespace {

// A name as shown in an error: printable ASCII only and bounded, since it may be anything a
// config or a request carried.
std::string shown(std::string_view name) {
  constexpr std::size_t kMax = 64;
  std::string out;
  for (const char c : name.substr(0, kMax)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  if (name.size() > kMax) out += "…";
  return "\"" + out + "\"";
}

Error bad(std::string message) { return permanent(invalid_argument(std::move(message))); }

}  // namespace

Result<std::string> normalize_secret_name(std::string_view name) {
  if (name.empty()) return bad("secret name must not be empty");
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) == 0 && c != '_') {
      return bad(fmt::format(
          "secret name {}: only letters, digits and _ are allowed in GitHub Actions secret names",
          shown(name)));
    }
  }
  if (std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
    return bad(fmt::format("secret name {}: must not start with a digit", shown(name)));
  }
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper.rfind("GITHUB_", 0) == 0) {
    return bad(fmt::format("secret name {}: names starting with GITHUB_ are reserved by GitHub",
                           shown(name)));
  }
  return upper;
}

Result<Ok> check_secret_value(std::string_view name, const Secret& value) {
  if (value.empty()) {
    return bad(fmt::format("secret {}: the value is empty (GitHub does not store empty secrets)",
                           shown(name)));
  }
  if (value.size() > kMaxSecretValueBytes) {
    return bad(fmt::format("secret {}: the value is {} bytes, over GitHub's limit of {} bytes",
                           shown(name), value.size(), kMaxSecretValueBytes));
  }
  return Ok{};
}

Result<std::string> seal_for_github(std::string_view public_key_base64, const Secret& value) {
  if (sodium_init() < 0) return internal_error("libsodium failed to initialize");
  std::vector<unsigned char> key(crypto_box_PUBLICKEYBYTES + 1);
  std::size_t key_size = 0;
  if (public_key_base64.empty() ||
      sodium_base642bin(key.data(), key.size(), public_key_base64.data(), public_key_base64.size(),
                        " \r\n", &key_size, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      key_size != crypto_box_PUBLICKEYBYTES) {
    return bad("GitHub's public key is not the base64 of a 32-byte key");
  }
  auto sealed =
      seal_to(std::string_view(reinterpret_cast<const char*>(key.data()), key_size), value);
  if (!sealed) return sealed.error();
  const std::string& box = sealed.value();
  std::string out(sodium_base64_encoded_len(box.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(box.data()),
                    box.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL sodium writes
  return out;
}

}  // namespace orgd::github
