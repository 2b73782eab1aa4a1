#include "plugins/cloudflare/r2_store.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "daemon/net/rate_limits.hpp"
#include "daemon/net/url.hpp"
#include "plugins/cloudflare/rest_client.hpp"
#include "plugins/cloudflare/s3_xml.hpp"
#include "plugins/cloudflare/sigv4.hpp"

namespace orgd::cloudflare {

namespace {

// Cloudflare's code for "The bucket you tried to create already exists, and you own it."
constexpr std::int64_t kBucketExists = 10004;
constexpr int kMaxPages = 1000;
constexpr std::size_t kMaxObjects = 100'000;
constexpr std::size_t kMaxMessageChars = 300;

std::string printable(std::string_view text) {
  std::string out;
  for (const unsigned char c : text) {
    if (out.size() >= kMaxMessageChars) {
      out += "…";
      break;
    }
    out.push_back(c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c));
  }
  return out;
}

std::string amz_date(Clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[17];
  std::strftime(text, sizeof text, "%Y%m%dT%H%M%SZ", &tm);
  return text;
}

// S3's LastModified: 2026-12-03T11:41:09.000Z.
std::optional<Clock::time_point> parse_time(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == nullptr) return std::nullopt;
  const std::time_t t = timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

// The Error of a failed S3 answer: its <Code> and <Message> named, the retry kind by status and
// code (429 and 503 SlowDown are R2 asking for a slower pace).
Error s3_error(const std::string& what, const HttpResponse& response) {
  const auto code = s3xml::text(response.body, "Code");
  const auto message = s3xml::text(response.body, "Message");
  std::string text = fmt::format("{}: R2 answered {}", what, response.status);
  if (code && !code->empty()) text += ": " + printable(*code);
  if (message && !message->empty()) text += ": " + printable(*message);
  const bool slow_down =
      response.status == 429 || response.status == 503 || (code && *code == "SlowDown");
  if (slow_down) {
    const auto wait =
        net::parse_retry_after(response.header("retry-after"), std::chrono::system_clock::now());
    if (wait)
      return rate_limited(std::move(text), std::max(*wait, std::chrono::milliseconds{1000}));
    return unavailable(std::move(text));
  }
  if (response.status >= 500) return unavailable(std::move(text));
  if (response.status == 404) return permanent(not_found(std::move(text)));
  if (response.status == 409) return permanent(conflict(std::move(text)));
  return permanent(invalid_argument(std::move(text)));
}

Secret bearer(const Secret& token) {
  std::string text;
  text.reserve(7 + token.size());
  text.append("Bearer ").append(token.expose());
  return Secret::take(std::move(text));
}

class R2Store final : public ObjectStore {
 public:
  R2Store(R2Settings settings, std::shared_ptr<HttpTransport> transport, TokenGetter token,
          std::shared_ptr<const Clock> clock)
      : s_(std::move(settings)),
        transport_(std::move(transport)),
        token_(std::move(token)),
        clock_(clock ? std::move(clock) : std::make_shared<SystemClock>()) {
    if (s_.s3_url.empty()) {
      s_.s3_url = "https://" + s_.account_id +
                  (s_.jurisdiction.empty() ? std::string{} : "." + s_.jurisdiction) +
                  ".r2.cloudflarestorage.com";
    }
    while (!s_.s3_url.empty() && s_.s3_url.back() == '/') s_.s3_url.pop_back();
    if (auto url = net::parse_url(s_.s3_url)) {
      host_ = url.value().host_header();
      base_path_ = url.value().target == "/" ? "" : url.value().target;
      origin_ = url.value().scheme + "://" + host_;
    } else {
      bad_url_ = url.error().message;
    }
    if (s_.max_keys <= 0 || s_.max_keys > 1000) s_.max_keys = 1000;
  }

  std::string describe() const override { return "r2 " + s_.store.bucket + "/" + s_.store.prefix; }

  Result<Ok> ensure() override {
    {
      std::lock_guard lock(mutex_);
      if (ensured_) return Ok{};
    }
    const std::string what = "creating R2 bucket " + s_.store.bucket;
    auto token = token_();
    if (!token) return token.error();
    HttpRequest request;
    request.method = "POST";
    request.url = s_.api_url + "/accounts/" + path_segment(s_.account_id) + "/r2/buckets";
    request.headers = {{"Accept", "application/json"}, {"Content-Type", "application/json"}};
    if (!s_.jurisdiction.empty())
      request.headers.push_back({"cf-r2-jurisdiction", s_.jurisdiction});
    request.body = nlohmann::json{{"name", s_.store.bucket}}.dump();
    request.authorization = std::make_shared<const Secret>(bearer(*token.value()));
    // Creating twice is harmless: an existing bucket is the answer we accept.
    request.idempotent = true;
    auto response = transport_->send(std::move(request));
    if (!response) return prefixed(what, response.error());
    auto envelope = read_envelope(what, response.value());
    if (!envelope) return envelope.error();
    const Envelope& e = envelope.value();
    const bool created = e.success && e.status / 100 == 2;
    // An existing bucket: Cloudflare's 10004, and a 409 whatever its code says (the code is
    // not in the SDK we read; docs/r2-backups.md).
    const bool exists = e.has_error(kBucketExists) || e.status == 409;
    if (!created && !exists) {
      Error error = envelope_error(what, e);
      if (error.retry != Retry::permanent) return error;
      // A token scoped to objects (Object Read & Write) may not create buckets: a bucket that
      // answers a listing is there, which is all we need.
      auto listed = list_page("checking R2 bucket " + s_.store.bucket, s_.store.prefix, {}, 1);
      if (!listed)
        return permanent(Error{error.code, error.message + "; " + listed.error().message});
    }
    std::lock_guard lock(mutex_);
    ensured_ = true;
    return Ok{};
  }

  Result<Ok> put(const std::string& key, std::string_view bytes) override {
    if (auto bad = check_key(key); !bad) return bad.error();
    const std::string what = "R2 PUT " + s_.store.bucket + "/" + s_.store.prefix + key;
    auto response = s3("PUT", s_.store.prefix + key, {}, bytes, what);
    if (!response) return response.error();
    if (response.value().status / 100 != 2) return s3_error(what, response.value());
    return Ok{};
  }

  Result<std::string> get(const std::string& key) override {
    if (auto bad = check_key(key); !bad) return bad.error();
    const std::string what = "R2 GET " + s_.store.bucket + "/" + s_.store.prefix + key;
    auto response = s3("GET", s_.store.prefix + key, {}, {}, what);
    if (!response) return response.error();
    if (response.value().status != 200) return s3_error(what, response.value());
    return std::move(response.value().body);
  }

  Result<Ok> remove(const std::string& key) override {
    if (auto bad = check_key(key); !bad) return bad.error();
    const std::string what = "R2 DELETE " + s_.store.bucket + "/" + s_.store.prefix + key;
    auto response = s3("DELETE", s_.store.prefix + key, {}, {}, what);
    if (!response) return response.error();
    if (response.value().status / 100 != 2) return s3_error(what, response.value());
    return Ok{};
  }

  Result<std::vector<StoredObject>> list(const std::string& key_prefix) override {
    const std::string what = "R2 list " + s_.store.bucket + "/" + s_.store.prefix + key_prefix;
    std::vector<StoredObject> out;
    std::optional<std::string> token;
    for (int pages = 0; pages < kMaxPages; ++pages) {
      auto page = list_page(what, s_.store.prefix + key_prefix, token, s_.max_keys);
      if (!page) return page.error();
      for (auto& object : page.value().objects) {
        if (out.size() >= kMaxObjects) {
          return unavailable(fmt::format("{}: more than {} objects", what, kMaxObjects));
        }
        out.push_back(std::move(object));
      }
      if (!page.value().truncated) {
        std::sort(out.begin(), out.end(),
                  [](const StoredObject& a, const StoredObject& b) { return a.key < b.key; });
        return out;
      }
      if (page.value().next.empty()) {
        return unavailable(what +
                           ": R2 said the listing is truncated but gave no "
                           "NextContinuationToken");
      }
      if (token && *token == page.value().next) {
        return unavailable(what + ": R2 gave the same continuation token twice");
      }
      token = std::move(page.value().next);
    }
    return unavailable(fmt::format("{}: more than {} pages", what, kMaxPages));
  }

 private:
  struct Page {
    std::vector<StoredObject> objects;
    bool truncated = false;
    std::string next;
  };
  struct KeyPair {
    std::string access_key_id;
    Secret secret_access_key;
  };

  static Error prefixed(const std::string& what, Error e) {
    e.message = what + ": " + e.message;
    return e;
  }

  Result<Ok> check_key(const std::string& key) const {
    if (key.empty()) return permanent(invalid_argument("R2: an object key may not be empty"));
    if (s_.store.prefix.size() + key.size() > 1024) {
      return permanent(invalid_argument("R2: an object key is at most 1024 bytes"));
    }
    for (const unsigned char c : key) {
      if (c < 0x20 || c == 0x7f) {
        return permanent(invalid_argument("R2: an object key may not hold control characters"));
      }
    }
    return Ok{};
  }

  // The S3 key pair derived from the API token (cloud-apis.md §2.6): the token's id as the
  // access key id, SHA-256 hex of its value as the secret. Asked for once per store.
  Result<const KeyPair*> key_pair() {
    {
      std::lock_guard lock(mutex_);
      if (keys_) return &*keys_;
    }
    auto token = token_();
    if (!token) return token.error();
    std::string refused;
    std::string id;
    for (const bool account : {false, true}) {
      const std::string what = account ? "R2 credentials: verifying the token as an account token"
                                       : "R2 credentials: verifying the token as a user token";
      HttpRequest request;
      request.url =
          s_.api_url + (account ? "/accounts/" + path_segment(s_.account_id) + "/tokens/verify"
                                : std::string{"/user/tokens/verify"});
      request.headers = {{"Accept", "application/json"}};
      request.authorization = std::make_shared<const Secret>(bearer(*token.value()));
      auto response = transport_->send(std::move(request));
      if (!response) return prefixed(what, response.error());
      auto envelope = read_envelope(what, response.value());
      if (!envelope) return envelope.error();
      const Envelope& e = envelope.value();
      if (e.success && e.status / 100 == 2) {
        id = string_field(e.result, "id");
        if (id.empty()) return unavailable(what + ": Cloudflare's result has no id");
        break;
      }
      Error error = envelope_error(what, e);
      if (error.retry == Retry::rate_limited || e.status >= 500) return error;
      // A user token is refused by the account's endpoint and an account token by the user's.
      if (!account) {
        refused = error.message;
        continue;
      }
      error.message = refused + "; " + error.message;
      return error;
    }
    std::lock_guard lock(mutex_);
    if (!keys_) {
      keys_.emplace(KeyPair{id, Secret::take(sigv4::sha256_hex(token.value()->expose()))});
    }
    return &*keys_;
  }

  // One signed S3 request: `object` (the full key, prefix included; empty for the bucket).
  Result<HttpResponse> s3(const std::string& method, const std::string& object,
                          std::vector<std::pair<std::string, std::string>> query,
                          std::string_view body, const std::string& what) {
    if (!bad_url_.empty()) return permanent(invalid_argument(what + ": r2_url: " + bad_url_));
    auto keys = key_pair();
    if (!keys) return keys.error();
    sigv4::Request signing;
    signing.method = method;
    signing.encoded_path = base_path_ + "/" + sigv4::uri_encode(s_.store.bucket, false);
    if (!object.empty()) signing.encoded_path += "/" + sigv4::uri_encode(object, true);
    signing.query = std::move(query);
    signing.host = host_;
    if (method == "PUT") signing.headers.push_back({"Content-Type", "application/octet-stream"});
    signing.payload_sha256 = sigv4::sha256_hex(body);
    signing.amz_date = amz_date(clock_->now());
    auto signature =
        sigv4::sign(signing, keys.value()->access_key_id, keys.value()->secret_access_key);
    HttpRequest request;
    request.method = method;
    request.url = origin_ + signing.encoded_path;
    if (!signing.query.empty()) request.url += "?" + sigv4::canonical_query(signing.query);
    request.headers = sigv4::wire_headers(signing);
    request.body = std::string{body};
    request.authorization = std::make_shared<const Secret>(std::move(signature.authorization));
    auto response = transport_->send(std::move(request));
    if (!response) return prefixed(what, response.error());
    return response;
  }

  Result<Page> list_page(const std::string& what, const std::string& prefix,
                         const std::optional<std::string>& token, int max_keys) {
    std::vector<std::pair<std::string, std::string>> query{
        {"list-type", "2"}, {"max-keys", std::to_string(max_keys)}, {"prefix", prefix}};
    if (token) query.emplace_back("continuation-token", *token);
    auto response = s3("GET", {}, std::move(query), {}, what);
    if (!response) return response.error();
    const HttpResponse& r = response.value();
    if (r.status != 200) return s3_error(what, r);
    if (s3xml::elements(r.body, "ListBucketResult").empty()) {
      return unavailable(what + ": R2's answer is not a ListBucketResult");
    }
    Page page;
    for (const auto contents : s3xml::elements(r.body, "Contents")) {
      auto key = s3xml::text(contents, "Key");
      if (!key) return unavailable(what + ": an object in R2's listing has no readable Key");
      // A key outside what was asked for is not ours to show (or to prune).
      if (key->rfind(s_.store.prefix, 0) != 0 || key->size() == s_.store.prefix.size()) continue;
      StoredObject object;
      object.key = key->substr(s_.store.prefix.size());
      if (const auto size = s3xml::text(contents, "Size")) {
        try {
          object.size = std::stoull(*size);
        } catch (const std::exception&) {
          return unavailable(what + ": an object's Size is not a number");
        }
      }
      if (const auto modified = s3xml::text(contents, "LastModified")) {
        object.modified = parse_time(*modified);
      }
      page.objects.push_back(std::move(object));
    }
    const auto truncated = s3xml::text(r.body, "IsTruncated");
    page.truncated = truncated && *truncated == "true";
    page.next = s3xml::text(r.body, "NextContinuationToken").value_or("");
    return page;
  }

  R2Settings s_;
  std::shared_ptr<HttpTransport> transport_;
  TokenGetter token_;
  std::shared_ptr<const Clock> clock_;
  std::string host_, base_path_, origin_, bad_url_;
  std::mutex mutex_;  // guards ensured_, keys_
  bool ensured_ = false;
  std::optional<KeyPair> keys_;
};

}  // namespace

std::unique_ptr<ObjectStore> make_r2_store(R2Settings settings,
                                           std::shared_ptr<HttpTransport> transport,
                                           TokenGetter token, std::shared_ptr<const Clock> clock) {
  return std::make_unique<R2Store>(std::move(settings), std::move(transport), std::move(token),
                                   std::move(clock));
}

}  // namespace orgd::cloudflare
