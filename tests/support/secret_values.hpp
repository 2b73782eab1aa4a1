#pragma once

// Random values for tests of the secrets engine: canaries that no code path may print, store in
// clear or publish, and master keys in the format orgd reads (32 bytes, standard base64).

#include <cstddef>
#include <string>

namespace orgd::testing {

// `bytes` random bytes as lower-case hex.
std::string random_hex(std::size_t bytes);
// "canary-<what>-<16 hex digits>".
std::string canary(const std::string& what);
// 32 random bytes, standard base64 (what `head -c 32 /dev/urandom | base64` prints).
std::string random_master_key_base64();

}  // namespace orgd::testing
