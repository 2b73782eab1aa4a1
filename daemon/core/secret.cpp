#include "daemon/core/secret.hpp"

#include <sodium.h>

#include <cstring>
#include <new>
#include <stdexcept>

namespace orgd {
namespace {

void ensure_sodium() {
  static const int ready = sodium_init();
  if (ready < 0) throw std::runtime_error("libsodium could not be initialised");
}

}  // namespace

Secret Secret::from(std::string_view bytes) {
  ensure_sodium();
  Secret secret;
  if (bytes.empty()) return secret;
  // One byte more: the NUL of c_str().
  auto* data = static_cast<unsigned char*>(sodium_malloc(bytes.size() + 1));
  if (data == nullptr) throw std::bad_alloc();
  std::memcpy(data, bytes.data(), bytes.size());
  data[bytes.size()] = '\0';
  secret.data_ = data;
  secret.size_ = bytes.size();
  return secret;
}

Secret Secret::take(std::string&& bytes) {
  Secret secret = from(bytes);
  if (!bytes.empty()) sodium_memzero(bytes.data(), bytes.size());
  bytes.clear();
  bytes.shrink_to_fit();
  return secret;
}

Secret::Secret(Secret&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    clear();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

Secret::~Secret() { clear(); }

void Secret::clear() {
  // sodium_free zeroes the memory before it gives it back.
  if (data_ != nullptr) sodium_free(data_);
  data_ = nullptr;
  size_ = 0;
}

bool Secret::equals(const Secret& other) const {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return sodium_memcmp(data_, other.data_, size_) == 0;
}

Result<std::string> seal_to(std::string_view public_key, const Secret& value) {
  ensure_sodium();
  if (public_key.size() != crypto_box_PUBLICKEYBYTES) {
    return invalid_argument("a sealing key is " + std::to_string(crypto_box_PUBLICKEYBYTES) +
                            " bytes, got " + std::to_string(public_key.size()));
  }
  std::string sealed(crypto_box_SEALBYTES + value.size(), '\0');
  const std::string_view bytes = value.expose();
  if (crypto_box_seal(reinterpret_cast<unsigned char*>(sealed.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                      reinterpret_cast<const unsigned char*>(public_key.data())) != 0) {
    return internal_error("crypto_box_seal failed");
  }
  return sealed;
}

}  // namespace orgd
