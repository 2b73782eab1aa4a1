#include "daemon/bus/nkeys.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace orgd::nkeys {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr std::size_t kCrcSize = 2;
constexpr std::size_t kSeedRawSize = 2 + kEd25519SeedSize + kCrcSize;
constexpr std::size_t kPublicRawSize = 1 + crypto_sign_PUBLICKEYBYTES + kCrcSize;

static_assert(crypto_sign_SEEDBYTES == kEd25519SeedSize);
static_assert(crypto_sign_BYTES == kEd25519SignatureSize);

void ensure_sodium() {
  static const int ready = sodium_init();
  if (ready < 0) throw std::runtime_error("libsodium could not be initialised");
}

// Zeroes a buffer that held secret bytes when it goes out of scope.
template <typename Buffer>
class WipeOnExit {
 public:
  explicit WipeOnExit(Buffer& buffer) : buffer_(buffer) {}
  ~WipeOnExit() {
    if (!buffer_.empty()) sodium_memzero(buffer_.data(), buffer_.size());
  }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  Buffer& buffer_;
};

int base32_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

// Decodes into `out` without reallocating (so no copy of secret bytes is left behind in freed
// memory). `what` names the input in error messages ("nkey seed", "public key").
void base32_decode_into(std::string_view text, std::vector<unsigned char>& out, const char* what) {
  // Unpadded base32 leaves 0, 2, 4, 5 or 7 characters in the last group of 8.
  switch (text.size() % 8) {
    case 1:
    case 3:
    case 6:
      throw std::invalid_argument(std::string("invalid ") + what + ": bad base32 length");
    default:
      break;
  }
  out.clear();
  out.reserve(text.size() * 5 / 8);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int v = base32_value(c);
    if (v < 0) {
      buffer = 0;
      throw std::invalid_argument(std::string("invalid ") + what +
                                  ": character outside the base32 alphabet");
    }
    buffer = (buffer << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<unsigned char>((buffer >> bits) & 0xff));
    }
  }
  buffer = 0;
}

void check_crc(std::span<const unsigned char> raw, const char* what) {
  if (raw.size() < kCrcSize) throw std::invalid_argument(std::string("invalid ") + what);
  const auto body = raw.first(raw.size() - kCrcSize);
  const std::uint16_t expected =
      static_cast<std::uint16_t>(raw[raw.size() - 2] | (raw[raw.size() - 1] << 8));
  if (crc16(body) != expected) {
    throw std::invalid_argument(std::string("invalid ") + what + ": checksum mismatch");
  }
}

void append_crc(std::vector<unsigned char>& raw) {
  const std::uint16_t crc = crc16(raw);
  raw.push_back(static_cast<unsigned char>(crc & 0xff));
  raw.push_back(static_cast<unsigned char>(crc >> 8));
}

bool valid_public_prefix(unsigned char prefix) {
  switch (static_cast<KeyType>(prefix)) {
    case KeyType::account:
    case KeyType::cluster:
    case KeyType::server:
    case KeyType::operator_:
    case KeyType::user:
      return true;
  }
  return false;
}

// A decoded seed: its type and the raw ed25519 seed, zeroed on destruction.
struct RawSeed {
  KeyType type{};
  std::array<unsigned char, kEd25519SeedSize> bytes{};
  ~RawSeed() { sodium_memzero(bytes.data(), bytes.size()); }
};

void decode_seed(std::string_view seed, RawSeed& out) {
  std::vector<unsigned char> raw;
  WipeOnExit wipe(raw);
  base32_decode_into(seed, raw, "nkey seed");
  if (raw.size() != kSeedRawSize) throw std::invalid_argument("invalid nkey seed: wrong length");
  check_crc(raw, "nkey seed");
  if ((raw[0] & 0xf8) != kPrefixByteSeed) {
    throw std::invalid_argument("invalid nkey seed: not a seed (must start with 'S')");
  }
  const auto type = static_cast<unsigned char>(((raw[0] & 0x07) << 5) | ((raw[1] & 0xf8) >> 3));
  if (!valid_public_prefix(type)) throw std::invalid_argument("invalid nkey seed: unknown type");
  out.type = static_cast<KeyType>(type);
  std::copy_n(raw.begin() + 2, kEd25519SeedSize, out.bytes.begin());
}

// The ed25519 key pair of a seed; the secret half is zeroed on destruction.
struct KeyPair {
  std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> public_key{};
  std::array<unsigned char, crypto_sign_SECRETKEYBYTES> secret_key{};
  ~KeyPair() { sodium_memzero(secret_key.data(), secret_key.size()); }
};

void key_pair_from_seed(const RawSeed& seed, KeyPair& out) {
  ensure_sodium();
  if (crypto_sign_seed_keypair(out.public_key.data(), out.secret_key.data(), seed.bytes.data()) !=
      0) {
    throw std::invalid_argument("invalid nkey seed: key derivation failed");
  }
}

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

}  // namespace

std::string base32_encode(std::span<const unsigned char> data) {
  std::string out;
  out.reserve((data.size() * 8 + 4) / 5);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char byte : data) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push_back(kAlphabet[(buffer >> bits) & 0x1f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 0x1f]);
  return out;
}

std::vector<unsigned char> base32_decode(std::string_view text) {
  std::vector<unsigned char> out;
  base32_decode_into(text, out, "base32 text");
  return out;
}

std::uint16_t crc16(std::span<const unsigned char> data) {
  std::uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc ^= static_cast<std::uint16_t>(byte) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string encode_public_key(KeyType type, std::span<const unsigned char, 32> public_key) {
  std::vector<unsigned char> raw;
  raw.reserve(kPublicRawSize);
  raw.push_back(static_cast<unsigned char>(type));
  raw.insert(raw.end(), public_key.begin(), public_key.end());
  append_crc(raw);
  return base32_encode(raw);
}

std::string encode_seed(KeyType type, std::span<const unsigned char, kEd25519SeedSize> raw_seed) {
  const auto prefix = static_cast<unsigned char>(type);
  std::vector<unsigned char> raw;
  WipeOnExit wipe(raw);
  raw.reserve(kSeedRawSize);
  raw.push_back(static_cast<unsigned char>(kPrefixByteSeed | (prefix >> 5)));
  raw.push_back(static_cast<unsigned char>((prefix & 0x1f) << 3));
  raw.insert(raw.end(), raw_seed.begin(), raw_seed.end());
  append_crc(raw);
  return base32_encode(raw);
}

KeyType seed_type(std::string_view seed) {
  RawSeed raw;
  decode_seed(seed, raw);
  return raw.type;
}

std::string public_key_from_seed(std::string_view seed) {
  RawSeed raw;
  decode_seed(seed, raw);
  KeyPair pair;
  key_pair_from_seed(raw, pair);
  return encode_public_key(raw.type, pair.public_key);
}

std::vector<unsigned char> sign(std::string_view seed, std::string_view data) {
  RawSeed raw;
  decode_seed(seed, raw);
  KeyPair pair;
  key_pair_from_seed(raw, pair);
  std::vector<unsigned char> signature(crypto_sign_BYTES);
  crypto_sign_detached(signature.data(), nullptr,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                       pair.secret_key.data());
  return signature;
}

bool verify(std::string_view public_key, std::string_view data,
            std::span<const unsigned char> signature) {
  if (signature.size() != crypto_sign_BYTES) return false;
  std::vector<unsigned char> raw;
  try {
    base32_decode_into(public_key, raw, "public key");
    if (raw.size() != kPublicRawSize) return false;
    check_crc(raw, "public key");
  } catch (const std::invalid_argument&) {
    return false;
  }
  if (!valid_public_prefix(raw[0])) return false;
  ensure_sodium();
  return crypto_sign_verify_detached(signature.data(),
                                     reinterpret_cast<const unsigned char*>(data.data()),
                                     data.size(), raw.data() + 1) == 0;
}

std::string read_seed_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read nkey file " + path.string());
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WipeOnExit wipe_content(content);
  if (in.bad()) throw std::invalid_argument("cannot read nkey file " + path.string());

  bool saw_other_seed = false;
  std::size_t start = 0;
  while (start <= content.size()) {
    auto end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    std::string line = trim(std::string_view(content).substr(start, end - start));
    WipeOnExit wipe_line(line);
    start = end + 1;
    if (line.size() < 2 || line[0] != 'S') continue;
    if (line[1] != 'U') {
      saw_other_seed = true;
      continue;
    }
    try {
      if (seed_type(line) == KeyType::user) {
        // A copy: `line` itself is wiped when this scope ends.
        std::string seed(line);
        return seed;
      }
    } catch (const std::invalid_argument&) {
      // A line that only looks like a seed: keep looking, report below.
    }
  }
  throw std::invalid_argument("nkey file " + path.string() +
                              (saw_other_seed
                                   ? " holds a seed that is not a user seed (SU...)"
                                   : " holds no valid user nkey seed (a line starting with SU)"));
}

std::string create_user_seed() {
  ensure_sodium();
  std::array<unsigned char, kEd25519SeedSize> raw{};
  randombytes_buf(raw.data(), raw.size());
  std::string seed = encode_seed(KeyType::user, raw);
  sodium_memzero(raw.data(), raw.size());
  return seed;
}

}  // namespace orgd::nkeys
