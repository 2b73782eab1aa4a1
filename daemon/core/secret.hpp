#pragma once

// A secret value (a token, a password, a key, a secret to push): its bytes live in
// sodium_malloc memory (guard pages, locked out of swap, left out of core dumps) and are zeroed
// when it is released. It moves, never copies (clone() says so where a copy is meant), has no
// conversion to a string, and prints as *** through fmt and streams, so a secret put in a log
// line or an error message by mistake shows as ***. expose() hands its bytes to the one call
// that needs them (a header being written, a seal).

#include <fmt/format.h>

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>

#include "daemon/core/errors.hpp"

namespace orgd {

class Secret {
 public:
  Secret() = default;
  // A copy of `bytes` (the caller wipes its own copy, or uses take()).
  static Secret from(std::string_view bytes);
  // A copy of `bytes`, then `bytes` is zeroed and emptied.
  static Secret take(std::string&& bytes);

  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret();

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  // The bytes, valid while this Secret lives and is not moved from. Not to be kept in a
  // std::string (a string's copies are never wiped).
  std::string_view expose() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  // The bytes NUL-terminated, for C APIs that take a string (nats.c's token, seed); "" when
  // empty.
  const char* c_str() const { return data_ == nullptr ? "" : reinterpret_cast<const char*>(data_); }
  Secret clone() const { return from(expose()); }
  // Constant time in the length: telling two secrets apart leaks no prefix.
  bool equals(const Secret& other) const;
  void clear();

 private:
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

inline std::ostream& operator<<(std::ostream& out, const Secret&) { return out << "***"; }

// crypto_box_seal: `value` sealed to a 32-byte X25519 public key (raw bytes), as GitHub's
// Actions secrets and remote providers take them. Only the key's holder can open it; the
// sender keeps nothing that could. invalid_argument for a key of the wrong size.
Result<std::string> seal_to(std::string_view public_key, const Secret& value);

}  // namespace orgd

template <>
struct fmt::formatter<orgd::Secret> : fmt::formatter<std::string_view> {
  template <class Context>
  auto format(const orgd::Secret&, Context& ctx) const {
    return fmt::formatter<std::string_view>::format("***", ctx);
  }
};
