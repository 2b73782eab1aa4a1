#include "daemon/secrets/vault_backup.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <system_error>

namespace orgd::secrets {
namespace {

using json = nlohmann::json;
using TimePoint = std::chrono::system_clock::time_point;

constexpr std::string_view kMagic = "ORGDVBAK";
constexpr std::size_t kKeyIdChars = 16;
constexpr std::size_t kStreamHeaderBytes = crypto_secretstream_xchacha20poly1305_HEADERBYTES;
constexpr std::size_t kChunkOverhead = crypto_secretstream_xchacha20poly1305_ABYTES;
// One record per chunk; a record is one value or one head. Larger lengths are refused before
// anything is allocated.
constexpr std::size_t kMaxChunkBytes = (1U << 20) + kChunkOverhead;

constexpr unsigned char kBeginRecord = 'B';
constexpr unsigned char kHeadRecord = 'H';
constexpr unsigned char kValueRecord = 'V';
constexpr unsigned char kEndRecord = 'E';

const std::string kPrefix = "orgd-vault-";
const std::string kSuffix = ".bak";

void put_be(std::string& out, std::uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}
std::uint64_t get_be(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[at + i]);
  return value;
}

Secret zeroed_secret(std::size_t size) {
  std::string zeros(size, '\0');
  return Secret::take(std::move(zeros));
}
unsigned char* bytes_of(const Secret& secret) {
  return reinterpret_cast<unsigned char*>(const_cast<char*>(secret.expose().data()));
}
const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

Error refused(std::string why) { return invalid_argument("backup refused: " + std::move(why)); }

std::int64_t to_ms(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The stream key the header's kind calls for.
Result<Secret> stream_key(const BackupHeader& header, const BackupKey& key) {
  if (header.kind == BackupKeyKind::master_key) {
    if (!key.master_key) return refused("it was made under the master key; none was given");
    if (key.master_key->key_id() != header.key_id) {
      return refused(fmt::format("it was made under master key {}; the key given is {}",
                                 header.key_id, key.master_key->key_id()));
    }
    return key.master_key->backup_key();
  }
  if (!key.passphrase) return refused("it was made with a passphrase; none was given");
  auto master = MasterKey::from_passphrase(*key.passphrase, header.kdf);
  if (!master) return master.error();
  // The passphrase's 32 bytes go through the same subkey derivation as a master key, so the
  // stream key is never the Argon2id output itself.
  return master.value().backup_key();
}

std::string header_bytes(const BackupHeader& header) {
  std::string out{kMagic};
  put_be(out, header.format_version, 2);
  out.push_back(static_cast<char>(header.kind));
  if (header.kind == BackupKeyKind::passphrase) {
    out += header.kdf.salt;
    put_be(out, header.kdf.opslimit, 8);
    put_be(out, header.kdf.memlimit, 8);
  } else {
    out += header.key_id;
  }
  return out;
}

// Parses the header; `size` is set to its length (before the stream header).
Result<BackupHeader> parse_header(std::string_view bytes, std::size_t& size) {
  if (bytes.size() < kMagic.size() + 3 || bytes.substr(0, kMagic.size()) != kMagic) {
    return refused("not an orgd vault backup (no ORGDVBAK header)");
  }
  BackupHeader header;
  std::size_t at = kMagic.size();
  header.format_version = static_cast<std::uint16_t>(get_be(bytes, at, 2));
  at += 2;
  if (header.format_version > kBackupFormatVersion) {
    return refused(fmt::format("format version {} is newer than this orgd reads ({})",
                               header.format_version, kBackupFormatVersion));
  }
  if (header.format_version == 0) return refused("format version 0 is not valid");
  const auto kind = static_cast<unsigned char>(bytes[at++]);
  if (kind == static_cast<unsigned char>(BackupKeyKind::passphrase)) {
    header.kind = BackupKeyKind::passphrase;
    if (bytes.size() < at + kKdfSaltBytes + 16) return refused("the header is truncated");
    header.kdf.salt = std::string{bytes.substr(at, kKdfSaltBytes)};
    at += kKdfSaltBytes;
    header.kdf.opslimit = get_be(bytes, at, 8);
    header.kdf.memlimit = get_be(bytes, at + 8, 8);
    at += 16;
    auto checked = check_kdf_params(header.kdf);
    if (!checked) return refused("the header's Argon2id parameters: " + checked.error().message);
  } else if (kind == static_cast<unsigned char>(BackupKeyKind::master_key)) {
    header.kind = BackupKeyKind::master_key;
    if (bytes.size() < at + kKeyIdChars) return refused("the header is truncated");
    header.key_id = std::string{bytes.substr(at, kKeyIdChars)};
    at += kKeyIdChars;
  } else {
    return refused(fmt::format("unknown key kind {}", static_cast<int>(kind)));
  }
  size = at;
  return header;
}

// Writes one record as one chunk.
class StreamWriter {
 public:
  // Appends the stream header to `out`; the first chunk is bound to everything in `out` up to
  // and including it.
  StreamWriter(std::string& out, const Secret& key) : out_(out) {
    std::string header(kStreamHeaderBytes, '\0');
    crypto_secretstream_xchacha20poly1305_init_push(
        &state_, reinterpret_cast<unsigned char*>(header.data()), bytes_of(key));
    out_ += header;
    first_ad_ = out_;
  }
  ~StreamWriter() { sodium_memzero(&state_, sizeof state_); }

  Result<Ok> push(std::string_view plain, unsigned char tag) {
    if (plain.size() + kChunkOverhead > kMaxChunkBytes) {
      return invalid_argument("a secret is too large for a backup record (1 MiB)");
    }
    std::string chunk(plain.size() + kChunkOverhead, '\0');
    unsigned long long size = 0;
    const std::string ad = first_ ? first_ad_ : std::string{};
    crypto_secretstream_xchacha20poly1305_push(
        &state_, reinterpret_cast<unsigned char*>(chunk.data()), &size, u8(plain), plain.size(),
        ad.empty() ? nullptr : u8(ad), ad.size(), tag);
    first_ = false;
    put_be(out_, size, 4);
    out_.append(chunk.data(), size);
    return Ok{};
  }

 private:
  std::string& out_;
  std::string first_ad_;
  bool first_ = true;
  crypto_secretstream_xchacha20poly1305_state state_{};
};

// A 'V' record in sodium memory: scope, name (u16-length-prefixed), version (u64), value.
Secret value_record(const std::string& scope, const std::string& name, std::uint64_t version,
                    const Secret& value) {
  std::string prefix(1, static_cast<char>(kValueRecord));
  put_be(prefix, scope.size(), 2);
  prefix += scope;
  put_be(prefix, name.size(), 2);
  prefix += name;
  put_be(prefix, version, 8);
  Secret record = zeroed_secret(prefix.size() + value.size());
  std::memcpy(bytes_of(record), prefix.data(), prefix.size());
  std::memcpy(bytes_of(record) + prefix.size(), value.expose().data(), value.size());
  return record;
}

TimePoint from_ms(std::int64_t ms) {
  return TimePoint{std::chrono::duration_cast<TimePoint::duration>(std::chrono::milliseconds{ms})};
}

Result<SecretHead> parse_head_record(std::string_view text) {
  auto head = decode_head(text);
  if (!head) return refused("a secret head inside it is malformed");
  return std::move(*head);
}

}  // namespace

BackupKey BackupKey::with_passphrase(Secret passphrase, KdfCost cost) {
  BackupKey key;
  key.passphrase = std::move(passphrase);
  key.cost = cost;
  return key;
}

BackupKey BackupKey::with_master_key(MasterKey master) {
  BackupKey key;
  key.master_key = std::move(master);
  return key;
}

Result<std::string> encrypt_backup(const std::vector<SecretVault::ExportedSecret>& secrets,
                                   const std::string& vault_key_id, const BackupKey& key,
                                   TimePoint now) {
  if (sodium_init() < 0) return internal_error("libsodium could not be initialised");
  BackupHeader header;
  header.format_version = kBackupFormatVersion;
  if (key.master_key) {
    header.kind = BackupKeyKind::master_key;
    header.key_id = key.master_key->key_id();
  } else if (key.passphrase) {
    header.kind = BackupKeyKind::passphrase;
    header.kdf = new_kdf_params(key.cost);
  } else {
    return invalid_argument("a backup needs a passphrase or the master key");
  }
  auto skey = stream_key(header, key);
  if (!skey) return skey.error();

  std::string out = header_bytes(header);
  StreamWriter writer(out, skey.value());
  const std::string begin =
      std::string(1, static_cast<char>(kBeginRecord)) +
      json{{"created", to_ms(now)}, {"vault_key_id", vault_key_id}, {"secrets", secrets.size()}}
          .dump();
  auto pushed = writer.push(begin, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
  if (!pushed) return pushed.error();
  std::size_t records = 0;
  for (const auto& secret : secrets) {
    const std::string head =
        std::string(1, static_cast<char>(kHeadRecord)) + encode_head(secret.head);
    pushed = writer.push(head, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    if (!pushed) return pushed.error();
    ++records;
    for (const auto& [version, value] : secret.values) {
      const Secret record = value_record(secret.head.scope, secret.head.name, version, value);
      pushed = writer.push(record.expose(), crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
      if (!pushed) return pushed.error();
      ++records;
    }
  }
  // The end record counts the records, and its FINAL tag says nothing was cut off.
  const std::string end =
      std::string(1, static_cast<char>(kEndRecord)) + json{{"records", records}}.dump();
  pushed = writer.push(end, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
  if (!pushed) return pushed.error();
  return out;
}

Result<std::string> make_backup(SecretVault& vault, const BackupKey& key, const Clock& clock) {
  auto secrets = vault.export_all();
  if (!secrets) return secrets.error();
  return encrypt_backup(secrets.value(), vault.key_id(), key, clock.now());
}

Result<BackupHeader> read_backup_header(std::string_view bytes) {
  std::size_t size = 0;
  return parse_header(bytes, size);
}

Result<BackupContents> read_backup(std::string_view bytes, const BackupKey& key) {
  if (sodium_init() < 0) return internal_error("libsodium could not be initialised");
  std::size_t at = 0;
  auto header = parse_header(bytes, at);
  if (!header) return header.error();
  if (bytes.size() < at + kStreamHeaderBytes) return refused("the file is truncated (header)");
  auto skey = stream_key(header.value(), key);
  if (!skey) return skey.error();
  crypto_secretstream_xchacha20poly1305_state state;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&state, u8(bytes.substr(at)),
                                                      bytes_of(skey.value())) != 0) {
    return refused("the stream header is invalid");
  }
  struct Wipe {
    crypto_secretstream_xchacha20poly1305_state* s;
    ~Wipe() { sodium_memzero(s, sizeof *s); }
  } wipe{&state};
  const std::string_view first_ad = bytes.substr(0, at + kStreamHeaderBytes);
  at += kStreamHeaderBytes;

  BackupContents contents;
  std::size_t expected_secrets = 0;
  std::size_t records = 0;
  bool finished = false;
  for (std::size_t index = 0; !finished; ++index) {
    if (at == bytes.size()) {
      return refused("the file is truncated (no final chunk: it was cut off)");
    }
    if (bytes.size() - at < 4) return refused("the file is truncated (inside a chunk length)");
    const std::size_t length = get_be(bytes, at, 4);
    at += 4;
    if (length < kChunkOverhead || length > kMaxChunkBytes) {
      return refused(fmt::format("chunk {} has an impossible length: the file is damaged", index));
    }
    if (bytes.size() - at < length) return refused("the file is truncated (inside a chunk)");
    Secret plain = zeroed_secret(length - kChunkOverhead + 1);  // +1: never a 0-byte Secret
    unsigned long long plain_size = 0;
    unsigned char tag = 0;
    const std::string_view ad = index == 0 ? first_ad : std::string_view{};
    if (crypto_secretstream_xchacha20poly1305_pull(&state, bytes_of(plain), &plain_size, &tag,
                                                   u8(bytes.substr(at, length)), length,
                                                   ad.empty() ? nullptr : u8(ad), ad.size()) != 0) {
      if (index == 0) {
        return refused(
            header.value().kind == BackupKeyKind::passphrase
                ? "it does not decrypt: wrong passphrase, or the file was altered"
                : "it does not decrypt: the file was altered (or not made with this key)");
      }
      return refused(fmt::format("chunk {} fails authentication: the file was altered", index));
    }
    at += length;
    const std::string_view record = plain.expose().substr(0, plain_size);
    if (record.empty()) return refused(fmt::format("chunk {} is empty", index));
    const auto type = static_cast<unsigned char>(record[0]);
    const std::string_view body = record.substr(1);
    if (index == 0) {
      if (type != kBeginRecord) return refused("the first record is not the backup's start");
      const auto doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (!doc.is_object() || !doc.contains("created") || !doc.contains("secrets")) {
        return refused("the backup's start record is malformed");
      }
      contents.created = from_ms(doc.value("created", std::int64_t{0}));
      contents.vault_key_id = doc.value("vault_key_id", "");
      expected_secrets = doc.value("secrets", std::size_t{0});
      continue;
    }
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
      if (type != kEndRecord) return refused("the final record is not the backup's end");
      const auto doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (!doc.is_object() || doc.value("records", std::size_t{0}) != records) {
        return refused("the record count does not match: the file is damaged");
      }
      finished = true;
      continue;
    }
    ++records;
    if (type == kHeadRecord) {
      auto head = parse_head_record(body);
      if (!head) return head.error();
      auto valid = check_scope_and_name(head.value().scope, head.value().name);
      if (!valid) return refused(valid.error().message);
      contents.secrets.push_back({std::move(head.value()), {}});
    } else if (type == kValueRecord) {
      if (contents.secrets.empty()) return refused("a value comes before any head");
      auto& current = contents.secrets.back();
      std::size_t p = 0;
      auto field = [&](std::string_view& out) {
        if (body.size() - p < 2) return false;
        const std::size_t n = get_be(body, p, 2);
        p += 2;
        if (body.size() - p < n) return false;
        out = body.substr(p, n);
        p += n;
        return true;
      };
      std::string_view scope, name;
      if (!field(scope) || !field(name) || body.size() - p < 8) {
        return refused("a value record is malformed");
      }
      const std::uint64_t version = get_be(body, p, 8);
      p += 8;
      if (scope != current.head.scope || name != current.head.name || p == body.size()) {
        return refused("a value record does not belong to the head before it");
      }
      current.values.emplace_back(version, Secret::from(body.substr(p)));
    } else {
      return refused(fmt::format("chunk {} has an unknown record type", index));
    }
  }
  if (at != bytes.size()) return refused("there are bytes after the final chunk");
  if (contents.secrets.size() != expected_secrets) {
    return refused("the number of secrets does not match: the file is damaged");
  }
  return contents;
}

Result<RestoreReport> restore_backup(SecretVault& vault, std::string_view bytes,
                                     const BackupKey& key) {
  auto contents = read_backup(bytes, key);
  if (!contents) return contents.error();
  RestoreReport report;
  for (const auto& secret : contents.value().secrets) {
    const Secret* active = nullptr;
    for (const auto& [version, value] : secret.values) {
      if (version == secret.head.active) active = &value;
    }
    if (active == nullptr) {
      ++report.skipped;
      continue;
    }
    auto set = vault.set(secret.head.scope, secret.head.name, *active, "restore");
    if (!set) return set.error();
    if (set.value().unchanged) {
      ++report.unchanged;
    } else {
      ++report.restored;
    }
  }
  return report;
}

std::string backup_name(TimePoint now) {
  // UTC whatever the machine's time zone (the name says Z).
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  return kPrefix + stamp + kSuffix;
}

bool is_backup_name(std::string_view name) {
  return name.size() > kPrefix.size() + kSuffix.size() && name.rfind(kPrefix, 0) == 0 &&
         name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0 &&
         name.find('/') == std::string_view::npos;
}

Result<std::string> write_store_backup(ObjectStore& store, std::string_view bytes, TimePoint now) {
  if (auto ensured = store.ensure(); !ensured) return ensured.error();
  std::string key = backup_name(now);
  // Two backups in one second (a scheduled one and an operator's) must not replace each other:
  // the later gets a -2, -3 … before the suffix.
  const std::string stem = key.substr(0, key.size() - kSuffix.size());
  auto same_second = store.list(stem);
  if (!same_second) return same_second.error();
  if (!same_second.value().empty()) {
    key = stem + "-" + std::to_string(same_second.value().size() + 1) + kSuffix;
  }
  if (auto put = store.put(key, bytes); !put) return put.error();
  return key;
}

Result<std::vector<StoredObject>> store_backups(ObjectStore& store) {
  auto listed = store.list(std::string{kPrefix});
  if (!listed) return listed.error();
  std::vector<StoredObject> out;
  for (auto& object : listed.value()) {
    if (is_backup_name(object.key)) out.push_back(std::move(object));
  }
  std::sort(out.begin(), out.end(),
            [](const StoredObject& a, const StoredObject& b) { return a.key < b.key; });
  return out;
}

Result<std::vector<std::string>> prune_store_backups(ObjectStore& store, int keep) {
  auto backups = store_backups(store);
  if (!backups) return backups.error();
  const auto& all = backups.value();
  const std::size_t kept = static_cast<std::size_t>(std::max(keep, 1));
  std::vector<std::string> removed;
  for (std::size_t i = 0; i + kept < all.size(); ++i) {
    if (auto gone = store.remove(all[i].key); !gone) return gone.error();
    removed.push_back(all[i].key);
  }
  return removed;
}

Result<std::filesystem::path> write_backup_file(const std::filesystem::path& dir,
                                                std::string_view bytes, TimePoint now) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return unavailable(fmt::format("backup dir {}: {}", dir.string(), ec.message()));
  const std::string name = backup_name(now);
  const std::filesystem::path path = dir / name;
  std::string temp = (dir / ("." + name + ".XXXXXX")).string();
  const int fd = mkstemp(temp.data());  // mode 0600
  if (fd < 0) {
    return unavailable(fmt::format("backup dir {}: {}", dir.string(), std::strerror(errno)));
  }
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    return unavailable(
        fmt::format("backup file {}: {} failed: {}", path.string(), what, std::strerror(err)));
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0600) != 0) return fail("chmod");
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    ::unlink(temp.c_str());
    return unavailable(fmt::format("backup file {}: close failed", path.string()));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return unavailable(
        fmt::format("backup file {}: rename failed: {}", path.string(), std::strerror(err)));
  }
  return path;
}

Result<std::vector<std::filesystem::path>> prune_backups(const std::filesystem::path& dir,
                                                         int keep) {
  std::error_code ec;
  std::vector<std::filesystem::path> backups;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_backup_name(name) && it->is_regular_file()) {
      backups.push_back(it->path());
    }
  }
  if (ec) return unavailable(fmt::format("backup dir {}: {}", dir.string(), ec.message()));
  // The UTC timestamp in the name sorts as the time does.
  std::sort(backups.begin(), backups.end());
  std::vector<std::filesystem::path> removed;
  const std::size_t kept = static_cast<std::size_t>(std::max(keep, 1));
  for (std::size_t i = 0; i + kept < backups.size(); ++i) {
    if (std::filesystem::remove(backups[i], ec)) removed.push_back(backups[i]);
  }
  return removed;
}

Result<std::filesystem::path> run_scheduled_backup(SecretVault& vault, const BackupKey& key,
                                                   const std::filesystem::path& dir, int keep,
                                                   const Clock& clock) {
  auto bytes = make_backup(vault, key, clock);
  if (!bytes) return bytes.error();
  auto path = write_backup_file(dir, bytes.value(), clock.now());
  if (!path) return path.error();
  auto pruned = prune_backups(dir, keep);
  if (!pruned) return pruned.error();
  return path;
}

}  // namespace orgd::secrets
