#pragma once

// NATS nkeys (ed25519 keys in the NATS text encoding), as far as orgd needs them: nats.c 3.4.1
// signs with a seed (nats_Sign) but cannot derive the public key that natsOptions_SetNKey()
// wants, so orgd decodes user seeds itself (libsodium does the ed25519 part).
//
// Encoding (github.com/nats-io/nkeys): base32 (RFC 4648 alphabet, no padding) of
//   public key: [type prefix byte][32-byte ed25519 public key][CRC16 little-endian]
//   seed:       [PREFIX_BYTE_SEED | type>>5][(type & 31) << 3][32-byte ed25519 seed][CRC16 LE]
// with CRC16/XMODEM over everything before it.
//
// Errors are std::invalid_argument; their messages never contain the seed or any part of it.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace orgd::nkeys {

// The type prefix bytes of the nkeys format (the first base32 character of a public key).
enum class KeyType : unsigned char {
  account = 0,          // 'A'
  cluster = 2 << 3,     // 'C'
  server = 13 << 3,     // 'N'
  operator_ = 14 << 3,  // 'O'
  user = 20 << 3,       // 'U'
};

inline constexpr unsigned char kPrefixByteSeed = 18 << 3;  // 'S'
inline constexpr std::size_t kEd25519SeedSize = 32;
inline constexpr std::size_t kEd25519SignatureSize = 64;

// RFC 4648 base32 without padding (the nkeys text form).
std::string base32_encode(std::span<const unsigned char> data);
// Throws std::invalid_argument on a character outside the alphabet or an impossible length.
std::vector<unsigned char> base32_decode(std::string_view text);

// CRC16/XMODEM (poly 0x1021, init 0), as nkeys append to every key.
std::uint16_t crc16(std::span<const unsigned char> data);

// Encodes a public key of the given type.
std::string encode_public_key(KeyType type, std::span<const unsigned char, 32> public_key);

// Encodes a raw ed25519 seed as an nkey seed of the given type ("SU..." for users).
std::string encode_seed(KeyType type, std::span<const unsigned char, kEd25519SeedSize> raw_seed);

// The public key ("U..." for a user seed) of an encoded seed. Throws std::invalid_argument if
// the seed is not a valid nkey seed.
std::string public_key_from_seed(std::string_view seed);

// The type of an encoded seed (KeyType::user for "SU..."). Throws std::invalid_argument.
KeyType seed_type(std::string_view seed);

// The 64-byte ed25519 signature of `data` under the seed's key: the same bytes nats_Sign()
// produces (the server verifies it against the public key). Throws std::invalid_argument.
std::vector<unsigned char> sign(std::string_view seed, std::string_view data);

// Verifies an ed25519 signature against an encoded public key ("U...", "A...", ...). Returns
// false on a bad signature or a malformed key.
bool verify(std::string_view public_key, std::string_view data,
            std::span<const unsigned char> signature);

// Reads a user seed from `path`: either a file holding just the seed, or an .nk / .creds file
// where one line starts with "SU". Throws std::invalid_argument when the file cannot be read or
// holds no valid user seed (the message names the file, never its content).
std::string read_seed_file(const std::filesystem::path& path);

// A fresh random user seed ("SU..."), for tests and tooling.
std::string create_user_seed();

}  // namespace orgd::nkeys
