#include "daemon/bus/kv_bucket.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>
#include <chrono>

namespace orgd {

namespace {

constexpr jsErrCode kStreamNameExists = static_cast<jsErrCode>(10058);
constexpr std::int64_t kNanosPerMilli = 1'000'000;

// nats.c reports a failed compare-and-set only in the error text.
bool is_conflict(natsStatus status) {
  if (status != NATS_ERR) return false;
  const std::string text = nats_GetLastError(nullptr);
  return text.find("wrong last sequence") != std::string::npos ||
         text.find("key exists") != std::string::npos;
}

KvEntry entry_of(kvEntry* entry) {
  KvEntry out;
  out.key = kvEntry_Key(entry);
  const auto* data = static_cast<const char*>(kvEntry_Value(entry));
  out.value.assign(data == nullptr ? "" : data, static_cast<std::size_t>(kvEntry_ValueLen(entry)));
  out.revision = kvEntry_Revision(entry);
  out.created = std::chrono::system_clock::time_point{std::chrono::duration_cast<
      std::chrono::system_clock::duration>(std::chrono::nanoseconds{kvEntry_Created(entry)})};
  return out;
}

}  // namespace

Result<std::unique_ptr<KvBucket>> KvBucket::open(jsCtx* js, const BucketSpec& spec) {
  if (js == nullptr) return unavailable("no JetStream context");
  // The stream nats.c's js_CreateKeyValue would create, made here so an existing bucket's ttl,
  // history and replicas can be updated in place.
  const std::string stream = "KV_" + spec.name;
  const std::string subject = "$KV." + spec.name + ".>";
  const char* subjects[] = {subject.c_str()};
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream.c_str();
  cfg.Description = spec.description.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.MaxMsgsPerSubject = spec.history;
  cfg.MaxBytes = -1;
  cfg.MaxAge = spec.ttl.count() * kNanosPerMilli;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = spec.replicas;
  cfg.AllowRollup = true;
  cfg.DenyDelete = true;
  cfg.AllowDirect = true;
  cfg.Discard = js_DiscardNew;
  const std::int64_t two_minutes = 120'000 * kNanosPerMilli;
  cfg.Duplicates = (cfg.MaxAge > 0 && cfg.MaxAge < two_minutes) ? cfg.MaxAge : two_minutes;

  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&info, js, &cfg, nullptr, &err);
  if (s != NATS_OK && err == kStreamNameExists) {
    err = static_cast<jsErrCode>(0);
    s = js_UpdateStream(&info, js, &cfg, nullptr, &err);
  }
  if (s != NATS_OK) {
    return unavailable(fmt::format("creating KV bucket {}: {} (error code {})", spec.name,
                                   nats_GetLastError(nullptr), static_cast<int>(err)));
  }
  jsStreamInfo_Destroy(info);
  kvStore* kv = nullptr;
  s = js_KeyValue(&kv, js, spec.name.c_str());
  if (s != NATS_OK) {
    return unavailable(fmt::format("opening KV bucket {}: {}", spec.name,
                                   nats_GetLastError(nullptr)));
  }
  return std::unique_ptr<KvBucket>(new JetStreamKvBucket(kv, spec.name));
}

JetStreamKvBucket::~JetStreamKvBucket() { kvStore_Destroy(kv_); }

Error JetStreamKvBucket::failure(const std::string& what, const std::string& key,
                                 int status) const {
  const auto s = static_cast<natsStatus>(status);
  std::string text = fmt::format("KV {} {}/{}: {}", what, name_, key, nats_GetLastError(nullptr));
  if (is_conflict(s)) return conflict(std::move(text));
  if (s == NATS_NOT_FOUND) return not_found(std::move(text));
  return unavailable(std::move(text));
}

Result<std::optional<KvEntry>> JetStreamKvBucket::get(const std::string& key) {
  kvEntry* entry = nullptr;
  const natsStatus s = kvStore_Get(&entry, kv_, key.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<KvEntry>{};
  if (s != NATS_OK) return failure("get", key, s);
  KvEntry out = entry_of(entry);
  kvEntry_Destroy(entry);
  return std::optional<KvEntry>{std::move(out)};
}

Result<std::uint64_t> JetStreamKvBucket::create(const std::string& key, const std::string& value) {
  std::uint64_t revision = 0;
  const natsStatus s = kvStore_Create(&revision, kv_, key.c_str(), value.data(),
                                      static_cast<int>(value.size()));
  if (s != NATS_OK) return failure("create", key, s);
  return revision;
}

Result<std::uint64_t> JetStreamKvBucket::update(const std::string& key, const std::string& value,
                                                std::uint64_t last_revision) {
  std::uint64_t revision = 0;
  const natsStatus s = kvStore_Update(&revision, kv_, key.c_str(), value.data(),
                                      static_cast<int>(value.size()), last_revision);
  if (s != NATS_OK) return failure("update", key, s);
  return revision;
}

Result<std::uint64_t> JetStreamKvBucket::put(const std::string& key, const std::string& value) {
  std::uint64_t revision = 0;
  const natsStatus s =
      kvStore_Put(&revision, kv_, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s != NATS_OK) return failure("put", key, s);
  return revision;
}

Result<Ok> JetStreamKvBucket::remove(const std::string& key) {
  const natsStatus s = kvStore_Delete(kv_, key.c_str());
  if (s != NATS_OK) return failure("delete", key, s);
  return Ok{};
}

Result<std::vector<KvEntry>> JetStreamKvBucket::current(const std::string& filter,
                                                        bool meta_only) {
  // A watch of the filter: the server sends the last entry of each matching key, then an empty
  // entry marking the end of what is stored now. Deletes are received and skipped here, not by
  // nats.c. A key deleted while the watch starts (its put, counted as pending, replaced by the
  // delete marker) can leave nats.c 3.4.1 waiting for an end marker that never comes (fixed in
  // nats.go the same way, PR #1824): the server pushes a listing's entries at once, so a second
  // with none means it has sent them all.
  constexpr long kIdleEnd = 1000;  // ms
  kvWatchOptions options;
  kvWatchOptions_Init(&options);
  options.MetaOnly = meta_only;
  kvWatcher* watcher = nullptr;
  natsStatus s = kvStore_Watch(&watcher, kv_, filter.c_str(), &options);
  if (s != NATS_OK) return failure("watch", filter, s);
  std::vector<KvEntry> entries;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      s = NATS_TIMEOUT;
      break;
    }
    kvEntry* entry = nullptr;
    s = kvWatcher_Next(&entry, watcher, std::min<long>(left, kIdleEnd));
    if (s == NATS_TIMEOUT && left > kIdleEnd) {
      s = NATS_OK;
      break;
    }
    if (s != NATS_OK) break;
    if (entry == nullptr) break;  // the end of the initial values
    if (kvEntry_Operation(entry) == kvOp_Put) entries.push_back(entry_of(entry));
    kvEntry_Destroy(entry);
  }
  kvWatcher_Destroy(watcher);
  if (s != NATS_OK) return failure("list", filter, s);
  return entries;
}

Result<std::vector<std::string>> JetStreamKvBucket::keys(const std::string& filter) {
  auto listed = current(filter, /*meta_only=*/true);
  if (!listed) return listed.error();
  std::vector<std::string> keys;
  keys.reserve(listed.value().size());
  for (auto& entry : listed.value()) keys.push_back(std::move(entry.key));
  return keys;
}

Result<std::vector<KvEntry>> JetStreamKvBucket::entries(const std::string& filter) {
  return current(filter, /*meta_only=*/false);
}

}  // namespace orgd
