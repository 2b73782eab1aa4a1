#include "tests/fakes/fake_s3.hpp"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <mutex>
#include <set>

namespace orgd::testing {

namespace {

using TimePoint = std::chrono::system_clock::time_point;

std::string to_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string to_hex(const unsigned char* data, std::size_t size) {
  std::string out;
  for (std::size_t i = 0; i < size; ++i) out += fmt::format("{:02x}", data[i]);
  return out;
}

std::string hmac_raw(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &size);
  return std::string(reinterpret_cast<const char*>(out), size);
}

// %XX decoded; '+' is a space in a query, as S3 reads one.
std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() &&
        std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string{text.substr(i + 1, 2)}, nullptr, 16)));
      i += 2;
    } else if (plus_is_space && text[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// RFC 3986: unreserved kept, the rest %XX upper case ('/' kept in paths).
std::string percent_encode(std::string_view text, bool path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved || (path && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> query_pairs(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t at = 0;
  while (at <= query.size() && !query.empty()) {
    const auto amp = query.find('&', at);
    const std::string part =
        query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    if (!part.empty()) {
      const auto eq = part.find('=');
      out.emplace_back(percent_decode(part.substr(0, eq), true),
                       eq == std::string::npos ? "" : percent_decode(part.substr(eq + 1), true));
    }
    if (amp == std::string::npos) break;
    at = amp + 1;
  }
  return out;
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string iso_time(TimePoint t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
  return text;
}

std::optional<TimePoint> parse_amz_date(const std::string& text) {
  if (text.size() != 16 || text[8] != 'T' || text[15] != 'Z') return std::nullopt;
  std::tm tm{};
  if (strptime(text.c_str(), "%Y%m%dT%H%M%SZ", &tm) == nullptr) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string trim_value(std::string_view value) {
  std::string out;
  bool pending_space = false;
  for (const char c : value) {
    if (c == ' ' || c == '\t') {
      if (!out.empty()) pending_space = true;
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

struct S3Error {
  int status;
  std::string code, message;
};

struct Object {
  std::string bytes;
  TimePoint modified;
};

struct Bucket {
  std::string jurisdiction;
  std::map<std::string, Object> objects;
};

}  // namespace

std::string fake_sha256_hex(std::string_view bytes) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &size, EVP_sha256(), nullptr);
  return to_hex(out, size);
}

std::string S3Call::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (to_lower(h.name) == to_lower(std::string{name})) return h.value;
  }
  return "";
}

struct FakeS3::State {
  Options options;
  mutable std::mutex mutex;  // guards everything below (not the lookup: it is the caller's)
  KeyLookup lookup;
  std::map<std::string, std::string> keys;
  std::map<std::string, Bucket> buckets;
  std::map<std::string, std::string> tokens;  // continuation token → the key to start at
  int next_token = 1;
  bool read_only = false;
  int fail_times = 0;
  int fail_status = 503;
  std::string fail_code;
  std::vector<S3Call> calls;

  TimePoint now() const {
    return options.clock ? options.clock() : std::chrono::system_clock::now();
  }

  // The signature check: nullopt when the request is signed by a known key pair.
  std::optional<S3Error> verify(const FakeRequest& request, const std::string& secret,
                                const std::string& authorization) const;
  FakeResponse serve(const FakeRequest& request);
};

namespace {

FakeResponse xml_error(const S3Error& e, const std::string& resource) {
  FakeResponse r;
  r.status = e.status;
  r.headers = {{"Content-Type", "application/xml"}};
  r.body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + e.code +
           "</Code><Message>" + xml_escape(e.message) + "</Message><Resource>" +
           xml_escape(resource) + "</Resource></Error>";
  return r;
}

struct Authorization {
  std::string access_key_id, date, region, service, terminal;
  std::vector<std::string> signed_headers;
  std::string signature;
};

std::optional<Authorization> parse_authorization(const std::string& header) {
  static const std::string kPrefix = "AWS4-HMAC-SHA256 ";
  if (header.rfind(kPrefix, 0) != 0) return std::nullopt;
  Authorization a;
  std::map<std::string, std::string> parts;
  std::size_t at = kPrefix.size();
  while (at < header.size()) {
    auto comma = header.find(',', at);
    std::string part =
        trim_value(header.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    const auto eq = part.find('=');
    if (eq == std::string::npos) return std::nullopt;
    parts[part.substr(0, eq)] = part.substr(eq + 1);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  if (!parts.count("Credential") || !parts.count("SignedHeaders") || !parts.count("Signature")) {
    return std::nullopt;
  }
  std::vector<std::string> scope;
  std::size_t from = 0;
  const std::string& credential = parts["Credential"];
  for (;;) {
    const auto slash = credential.find('/', from);
    scope.push_back(
        credential.substr(from, slash == std::string::npos ? std::string::npos : slash - from));
    if (slash == std::string::npos) break;
    from = slash + 1;
  }
  if (scope.size() != 5) return std::nullopt;
  a.access_key_id = scope[0];
  a.date = scope[1];
  a.region = scope[2];
  a.service = scope[3];
  a.terminal = scope[4];
  from = 0;
  const std::string& names = parts["SignedHeaders"];
  for (;;) {
    const auto semi = names.find(';', from);
    a.signed_headers.push_back(
        names.substr(from, semi == std::string::npos ? std::string::npos : semi - from));
    if (semi == std::string::npos) break;
    from = semi + 1;
  }
  a.signature = parts["Signature"];
  return a;
}

}  // namespace

std::optional<S3Error> FakeS3::State::verify(const FakeRequest& request, const std::string& secret,
                                             const std::string& authorization) const {
  const auto auth = parse_authorization(authorization);
  if (!auth)
    return S3Error{400, "AuthorizationHeaderMalformed", "The authorization header is malformed."};
  const std::string amz_date = request.header("x-amz-date");
  const auto when = parse_amz_date(amz_date);
  if (!when) return S3Error{403, "AccessDenied", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ."};
  if (auth->date != amz_date.substr(0, 8)) {
    return S3Error{400, "AuthorizationHeaderMalformed",
                   "The authorization header is malformed; the credential date does not match "
                   "X-Amz-Date."};
  }
  if (auth->region != "auto" && auth->region != "us-east-1" && !auth->region.empty()) {
    return S3Error{400, "AuthorizationHeaderMalformed",
                   "The authorization header is malformed; the region '" + auth->region +
                       "' is wrong; expecting 'auto'"};
  }
  if (auth->service != "s3" || auth->terminal != "aws4_request") {
    return S3Error{400, "AuthorizationHeaderMalformed", "The authorization header is malformed."};
  }
  const auto skew = *when > now() ? *when - now() : now() - *when;
  if (skew > options.max_skew) {
    return S3Error{403, "RequestTimeTooSkewed",
                   "The difference between the request time and the server's time is too large."};
  }
  const std::set<std::string> signed_set(auth->signed_headers.begin(), auth->signed_headers.end());
  for (const char* required : {"host", "x-amz-content-sha256", "x-amz-date"}) {
    if (!signed_set.count(required)) {
      return S3Error{403, "AccessDenied",
                     std::string{"There were headers present in the request which were not "
                                 "signed: "} +
                         required};
    }
  }
  const std::string content_sha = request.header("x-amz-content-sha256");
  if (content_sha != "UNSIGNED-PAYLOAD" && content_sha != fake_sha256_hex(request.body)) {
    return S3Error{400, "XAmzContentSHA256Mismatch",
                   "The provided 'x-amz-content-sha256' header does not match what was computed."};
  }

  // The canonical request, built from what came over the wire.
  std::string canonical = request.method + "\n";
  canonical += percent_encode(percent_decode(request.path, false), true) + "\n";
  auto query = query_pairs(request.query);
  for (auto& [name, value] : query) {
    name = percent_encode(name, false);
    value = percent_encode(value, false);
  }
  std::sort(query.begin(), query.end());
  for (std::size_t i = 0; i < query.size(); ++i) {
    canonical += (i ? "&" : "") + query[i].first + "=" + query[i].second;
  }
  canonical += "\n";
  std::vector<std::string> names = auth->signed_headers;
  if (!std::is_sorted(names.begin(), names.end())) {
    return S3Error{403, "SignatureDoesNotMatch", "The signed headers are not in order."};
  }
  for (const auto& name : names) {
    std::string joined;
    bool found = false;
    for (const auto& h : request.headers) {
      if (to_lower(h.name) != name) continue;
      joined += (found ? "," : "") + trim_value(h.value);
      found = true;
    }
    if (!found) {
      return S3Error{403, "SignatureDoesNotMatch",
                     "The request signature we calculated does not match the signature you "
                     "provided. Check your key and signing method."};
    }
    canonical += name + ":" + joined + "\n";
  }
  canonical += "\n";
  for (std::size_t i = 0; i < names.size(); ++i) canonical += (i ? ";" : "") + names[i];
  canonical += "\n" + content_sha;

  const std::string scope = auth->date + "/" + auth->region + "/s3/aws4_request";
  const std::string to_sign =
      "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + fake_sha256_hex(canonical);
  std::string key = hmac_raw("AWS4" + secret, auth->date);
  key = hmac_raw(key, auth->region);
  key = hmac_raw(key, "s3");
  key = hmac_raw(key, "aws4_request");
  const std::string raw = hmac_raw(key, to_sign);
  const std::string expected =
      to_hex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  if (expected.size() != auth->signature.size() ||
      CRYPTO_memcmp(expected.data(), auth->signature.data(), expected.size()) != 0) {
    return S3Error{403, "SignatureDoesNotMatch",
                   "The request signature we calculated does not match the signature you "
                   "provided. Check your key and signing method."};
  }
  return std::nullopt;
}

FakeS3::FakeS3(Options options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
}
FakeS3::FakeS3() : FakeS3(Options{}) {}
FakeS3::~FakeS3() = default;

FakeHttpServer::Handler FakeS3::handler() {
  return [this](const FakeRequest& request) { return handle(request); };
}

FakeResponse FakeS3::handle(const FakeRequest& request) {
  State& s = *state_;
  // The lookup may call into another fake: asked before this one's lock is taken.
  KeyLookup lookup;
  {
    std::lock_guard lock(s.mutex);
    lookup = s.lookup;
  }
  const std::string authorization = request.header("authorization");
  std::optional<std::string> secret;
  if (const auto auth = parse_authorization(authorization)) {
    {
      std::lock_guard lock(s.mutex);
      if (const auto it = s.keys.find(auth->access_key_id); it != s.keys.end()) secret = it->second;
    }
    if (!secret && lookup) secret = lookup(auth->access_key_id);
  }

  std::lock_guard lock(s.mutex);
  FakeResponse response;
  std::string code;
  if (s.fail_times > 0) {
    --s.fail_times;
    code = s.fail_code;
    response = xml_error(
        {s.fail_status, s.fail_code,
         s.fail_code == "SlowDown" ? "Please reduce your request rate."
                                   : "We encountered an internal error. Please try again."},
        request.path);
  } else if (authorization.empty()) {
    code = "AccessDenied";
    response = xml_error({403, code, "Access Denied"}, request.path);
  } else if (parse_authorization(authorization) && !secret) {
    code = "InvalidAccessKeyId";
    response =
        xml_error({403, code, "The AWS Access Key Id you provided does not exist in our records."},
                  request.path);
  } else if (const auto refused = s.verify(request, secret.value_or(""), authorization)) {
    code = refused->code;
    response = xml_error(*refused, request.path);
  } else {
    response = s.serve(request);
    if (response.status >= 300) {
      const auto at = response.body.find("<Code>");
      if (at != std::string::npos) {
        code = response.body.substr(at + 6, response.body.find("</Code>") - at - 6);
      }
    }
  }
  s.calls.push_back({request.method, request.path, request.query, request.headers, request.body,
                     response.status, code});
  return response;
}

FakeResponse FakeS3::State::serve(const FakeRequest& request) {
  // Path style: /<bucket>[/<key>]
  const std::string path = percent_decode(request.path, false);
  if (path.size() < 2 || path[0] != '/') {
    return xml_error({400, "InvalidRequest", "Path-style requests name a bucket."}, path);
  }
  const auto slash = path.find('/', 1);
  const std::string bucket_name =
      path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
  const std::string key = slash == std::string::npos ? "" : path.substr(slash + 1);
  const auto bucket = buckets.find(bucket_name);
  if (bucket == buckets.end()) {
    return xml_error({404, "NoSuchBucket", "The specified bucket does not exist."}, path);
  }
  auto& objects = bucket->second.objects;
  const std::string& m = request.method;
  if (key.empty()) {
    if (m != "GET")
      return xml_error(
          {405, "MethodNotAllowed", "The specified method is not allowed against this resource."},
          path);
    std::map<std::string, std::string> q;
    for (const auto& [name, value] : query_pairs(request.query)) q[name] = value;
    if (q["list-type"] != "2") {
      return xml_error(
          {501, "NotImplemented", "This fake serves ListObjectsV2 (list-type=2) only."}, path);
    }
    int max_keys = 1000;
    if (q.count("max-keys")) {
      try {
        max_keys = std::stoi(q["max-keys"]);
      } catch (const std::exception&) {
        return xml_error(
            {400, "InvalidArgument", "Provided max-keys not an integer or within integer range"},
            path);
      }
      if (max_keys < 0)
        return xml_error({400, "InvalidArgument", "max-keys must be positive"}, path);
    }
    max_keys = std::min(max_keys, options.page_size);
    const std::string prefix = q["prefix"];
    std::string start;
    if (q.count("continuation-token")) {
      const auto t = tokens.find(q["continuation-token"]);
      if (t == tokens.end()) {
        return xml_error({400, "InvalidArgument", "The continuation token provided is incorrect"},
                         path);
      }
      start = t->second;
    }
    std::string body =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
    body +=
        "<Name>" + xml_escape(bucket_name) + "</Name><Prefix>" + xml_escape(prefix) + "</Prefix>";
    int count = 0;
    std::string contents;
    std::string next_key;
    for (auto it = objects.lower_bound(std::max(start, prefix)); it != objects.end(); ++it) {
      if (it->first.rfind(prefix, 0) != 0) break;
      if (count == max_keys) {
        next_key = it->first;
        break;
      }
      ++count;
      contents += "<Contents><Key>" + xml_escape(it->first) + "</Key><LastModified>" +
                  iso_time(it->second.modified) + "</LastModified><ETag>&quot;" +
                  fake_sha256_hex(it->second.bytes).substr(0, 32) + "&quot;</ETag><Size>" +
                  std::to_string(it->second.bytes.size()) +
                  "</Size><StorageClass>STANDARD</StorageClass></Contents>";
    }
    body += "<KeyCount>" + std::to_string(count) + "</KeyCount><MaxKeys>" +
            std::to_string(max_keys) + "</MaxKeys>";
    if (q.count("continuation-token")) {
      body += "<ContinuationToken>" + xml_escape(q["continuation-token"]) + "</ContinuationToken>";
    }
    body += std::string{"<IsTruncated>"} + (next_key.empty() ? "false" : "true") + "</IsTruncated>";
    if (!next_key.empty()) {
      // Opaque, with characters a client must encode to send back.
      const std::string token =
          fmt::format("1/{}+{}==", next_token++, fake_sha256_hex(next_key).substr(0, 8));
      tokens[token] = next_key;
      body += "<NextContinuationToken>" + xml_escape(token) + "</NextContinuationToken>";
    }
    body += contents + "</ListBucketResult>";
    FakeResponse r;
    r.headers = {{"Content-Type", "application/xml"}};
    r.body = std::move(body);
    return r;
  }
  if (m == "PUT") {
    if (read_only) return xml_error({403, "AccessDenied", "Access Denied"}, path);
    objects[key] = {request.body, now()};
    FakeResponse r;
    r.headers = {{"ETag", "\"" + fake_sha256_hex(request.body).substr(0, 32) + "\""}};
    return r;
  }
  if (m == "GET") {
    const auto it = objects.find(key);
    if (it == objects.end())
      return xml_error({404, "NoSuchKey", "The specified key does not exist."}, path);
    FakeResponse r;
    r.headers = {{"Content-Type", "application/octet-stream"}};
    r.body = it->second.bytes;
    return r;
  }
  if (m == "DELETE") {
    if (read_only) return xml_error({403, "AccessDenied", "Access Denied"}, path);
    objects.erase(key);
    FakeResponse r;
    r.status = 204;
    return r;
  }
  return xml_error(
      {405, "MethodNotAllowed", "The specified method is not allowed against this resource."},
      path);
}

void FakeS3::set_key_lookup(KeyLookup lookup) {
  std::lock_guard lock(state_->mutex);
  state_->lookup = std::move(lookup);
}

void FakeS3::add_key(std::string access_key_id, std::string secret_access_key) {
  std::lock_guard lock(state_->mutex);
  state_->keys[std::move(access_key_id)] = std::move(secret_access_key);
}

bool FakeS3::add_bucket(const std::string& name, const std::string& jurisdiction) {
  std::lock_guard lock(state_->mutex);
  return state_->buckets.emplace(name, Bucket{jurisdiction, {}}).second;
}

bool FakeS3::has_bucket(const std::string& name) const {
  std::lock_guard lock(state_->mutex);
  return state_->buckets.count(name) != 0;
}

std::map<std::string, std::string> FakeS3::objects(const std::string& bucket) const {
  std::lock_guard lock(state_->mutex);
  std::map<std::string, std::string> out;
  const auto it = state_->buckets.find(bucket);
  if (it == state_->buckets.end()) return out;
  for (const auto& [key, object] : it->second.objects) out[key] = object.bytes;
  return out;
}

void FakeS3::put_object(const std::string& bucket, const std::string& key, std::string bytes) {
  std::lock_guard lock(state_->mutex);
  state_->buckets[bucket].objects[key] = {std::move(bytes), state_->now()};
}

void FakeS3::set_read_only(bool read_only) {
  std::lock_guard lock(state_->mutex);
  state_->read_only = read_only;
}

void FakeS3::fail_next(int times, int status, std::string code) {
  std::lock_guard lock(state_->mutex);
  state_->fail_times = times;
  state_->fail_status = status;
  state_->fail_code = std::move(code);
}

std::vector<S3Call> FakeS3::calls() const {
  std::lock_guard lock(state_->mutex);
  return state_->calls;
}

std::size_t FakeS3::count(const std::string& method) const {
  std::lock_guard lock(state_->mutex);
  return static_cast<std::size_t>(
      std::count_if(state_->calls.begin(), state_->calls.end(),
                    [&](const S3Call& c) { return c.method == method; }));
}

void FakeS3::clear_calls() {
  std::lock_guard lock(state_->mutex);
  state_->calls.clear();
}

FakeS3Server::FakeS3Server(FakeS3::Options options, FakeHttpServer::Options http)
    : s3_(std::move(options)), server_(s3_.handler(), std::move(http)) {}

void connect_r2(FakeCloudflare& cloudflare, FakeS3& s3) {
  cloudflare.set_r2_buckets([&s3](const std::string& name, const std::string& jurisdiction) {
    return s3.add_bucket(name, jurisdiction);
  });
  s3.set_key_lookup([&cloudflare](const std::string& id) -> std::optional<std::string> {
    const auto token = cloudflare.token_by_id(id);
    if (!token) return std::nullopt;
    return fake_sha256_hex(*token);
  });
}

}  // namespace orgd::testing
