#include "tests/support/secret_values.hpp"

#include <sodium.h>

#include <vector>

namespace orgd::testing {

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  randombytes_buf(raw.data(), raw.size());
  std::string out;
  for (const unsigned char b : raw) {
    out += "0123456789abcdef"[b >> 4];
    out += "0123456789abcdef"[b & 15];
  }
  return out;
}

std::string canary(const std::string& what) { return "canary-" + what + "-" + random_hex(8); }

std::string random_master_key_base64() {
  unsigned char key[32];
  randombytes_buf(key, sizeof key);
  char out[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(out, sizeof out, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
  return out;
}

}  // namespace orgd::testing
