#include "plugins/github/auth.hpp"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "daemon/core/ascii.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd::github {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// The PEM parsed into OpenSSL's structures for as long as one signature takes: the Secret stays
// the one long-lived copy of the key.
Result<Pkey> parse_rsa_key(const Secret& pem) {
  BIO* bio = BIO_new_mem_buf(pem.expose().data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return internal_error("out of memory reading the App's private key");
  // No passphrase callback: an encrypted key fails instead of prompting on a terminal.
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(
      bio, nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  BIO_free(bio);
  if (raw == nullptr) {
    return permanent(invalid_argument(
        "the GitHub App's private key is not a PEM private key (unencrypted, as GitHub "
        "downloads it)"));
  }
  Pkey key(raw);
  if (EVP_PKEY_base_id(raw) != EVP_PKEY_RSA) {
    return permanent(invalid_argument(
        "the GitHub App's private key is not an RSA key (GitHub Apps sign RS256 JWTs)"));
  }
  return key;
}

std::string base64url(std::string_view bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(out.size() - 1);  // the NUL sodium writes
  return out;
}

std::int64_t epoch_seconds(Clock::time_point t) {
  return duration_cast<seconds>(t.time_since_epoch()).count();
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

// GitHub's `message` from an error body, printable and bounded; empty when there is none.
std::string github_message(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return {};
  const auto it = json.find("message");
  if (it == json.end() || !it->is_string()) return {};
  std::string out;
  for (const char c : it->get_ref<const std::string&>()) {
    if (out.size() >= 200) {
      out += "…";
      break;
    }
    out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  }
  return out;
}

std::optional<std::int64_t> header_number(const HttpResponse& response, std::string_view name) {
  const std::string_view text = response.header(name);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < 0) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

Secret bearer(std::string_view credential) {
  std::string text;
  // Reserved up front: a reallocation would leave an unwiped copy behind.
  text.reserve(7 + credential.size());
  text.append("Bearer ").append(credential);
  return Secret::take(std::move(text));
}

TokenAuth::TokenAuth(Secret token)
    : header_(std::make_shared<const Secret>(bearer(token.expose()))) {}

Result<std::unique_ptr<TokenAuth>> TokenAuth::from_env(const SecretSource& source,
                                                       const std::string& token_env) {
  auto token = source.from_env(token_env);
  if (!token) {
    return permanent(Error{token.error().code, "GitHub token: " + token.error().message});
  }
  return std::make_unique<TokenAuth>(std::move(token).value());
}

std::optional<Clock::time_point> parse_github_time(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS then optional .fraction, then Z or +00:00.
  if (t.size() < 20) return std::nullopt;
  auto num = [&](std::size_t at, std::size_t len) -> std::optional<int> {
    int v = 0;
    for (std::size_t i = at; i < at + len; ++i) {
      if (std::isdigit(static_cast<unsigned char>(t[i])) == 0) return std::nullopt;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  if (t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') || t[13] != ':' ||
      t[16] != ':') {
    return std::nullopt;
  }
  const auto y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
             s = num(17, 2);
  if (!y || !mo || !d || !h || !mi || !s || *h > 23 || *mi > 59 || *s > 60) return std::nullopt;
  std::string_view rest = t.substr(19);
  if (!rest.empty() && rest.front() == '.') {
    std::size_t i = 1;
    while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i])) != 0) ++i;
    if (i == 1) return std::nullopt;
    rest.remove_prefix(i);  // sub-second precision does not matter for expiry
  }
  if (rest != "Z" && rest != "z" && rest != "+00:00") return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year{*y},
                                         std::chrono::month{static_cast<unsigned>(*mo)},
                                         std::chrono::day{static_cast<unsigned>(*d)}};
  if (!date.ok()) return std::nullopt;
  return Clock::time_point{std::chrono::sys_days{date}} + std::chrono::hours{*h} +
         std::chrono::minutes{*mi} + seconds{*s};
}

Error github_error(std::string_view what, const HttpResponse& response, Clock::time_point now) {
  const int status = response.status;
  const std::string message = github_message(response.body);
  const std::string text = message.empty()
                               ? fmt::format("{}: GitHub answered {}", what, status)
                               : fmt::format("{}: GitHub answered {}: {}", what, status, message);
  if (status == 403 || status == 429) {
    const auto retry_after = header_number(response, "retry-after");
    const auto remaining = header_number(response, "x-ratelimit-remaining");
    const auto reset = header_number(response, "x-ratelimit-reset");
    const bool says_rate_limit = icontains(message, "rate limit");
    // cloud-apis.md §1.5: retry-after first, then the reset when nothing remains, else at least
    // a minute (secondary limits).
    if (retry_after) return rate_limited(text, duration_cast<milliseconds>(seconds{*retry_after}));
    if (remaining && *remaining == 0) {
      const auto wait =
          reset ? seconds{std::max<std::int64_t>(0, *reset - epoch_seconds(now))} : seconds{60};
      return rate_limited(text, duration_cast<milliseconds>(wait));
    }
    if (status == 429 || says_rate_limit) return rate_limited(text, seconds{60});
  }
  if (status >= 500) return unavailable(text);  // retryable: GitHub's side
  Error e;
  switch (status) {
    case 404:
      e = not_found(text);
      break;
    case 409:
      e = conflict(text);
      break;
    default:
      e = invalid_argument(text);
      break;
  }
  return permanent(std::move(e));
}

AppAuth::AppAuth(Options options, Secret private_key_pem, std::shared_ptr<HttpTransport> transport,
                 std::shared_ptr<const Clock> clock)
    : options_(std::move(options)),
      private_key_pem_(std::move(private_key_pem)),
      transport_(std::move(transport)),
      clock_(std::move(clock)) {}

Result<std::unique_ptr<AppAuth>> AppAuth::create(Options options, Secret private_key_pem,
                                                 std::shared_ptr<HttpTransport> transport,
                                                 std::shared_ptr<const Clock> clock) {
  if (auto key = parse_rsa_key(private_key_pem); !key) return key.error();
  if (!transport) return internal_error("AppAuth needs an HTTP transport");
  if (!clock) clock = std::make_shared<SystemClock>();
  return std::unique_ptr<AppAuth>(new AppAuth(std::move(options), std::move(private_key_pem),
                                              std::move(transport), std::move(clock)));
}

Result<Secret> AppAuth::make_jwt() const {
  auto key = parse_rsa_key(private_key_pem_);
  if (!key) return key.error();
  const auto now = clock_->now();
  nlohmann::json payload = {{"iat", epoch_seconds(now - kIssuedAtSkew)},
                            {"exp", epoch_seconds(now + kJwtLifetime)}};
  // A numeric application ID as the number GitHub issued, a client ID as its string.
  if (all_digits(options_.app_id) && options_.app_id.size() < 19) {
    payload["iss"] = std::stoll(options_.app_id);
  } else {
    payload["iss"] = options_.app_id;
  }
  std::string signing_input =
      base64url(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url(payload.dump());

  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return internal_error("out of memory signing the App's JWT");
  std::size_t size = 0;
  std::string signature;
  bool ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key.value().get()) == 1 &&
            EVP_DigestSign(ctx, nullptr, &size,
                           reinterpret_cast<const unsigned char*>(signing_input.data()),
                           signing_input.size()) == 1;
  if (ok) {
    signature.resize(size);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(signature.data()), &size,
                        reinterpret_cast<const unsigned char*>(signing_input.data()),
                        signing_input.size()) == 1;
    signature.resize(size);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) return internal_error("signing the GitHub App's JWT failed (OpenSSL)");
  const std::string encoded = base64url(signature);
  signing_input.reserve(signing_input.size() + 1 + encoded.size());
  signing_input.append(".").append(encoded);
  return Secret::take(std::move(signing_input));
}

Result<std::shared_ptr<const Secret>> AppAuth::authorization() {
  std::lock_guard lock(mutex_);
  if (!header_ || invalidated_ || clock_->now() + kRefreshBefore >= expires_at_) {
    if (auto fetched = fetch_locked(); !fetched) {
      // A refresh ahead of expiry that fails (GitHub briefly down) keeps the token that still
      // works; the next call tries the refresh again.
      if (header_ && !invalidated_ && clock_->now() < expires_at_) return header_;
      return fetched.error();
    }
  }
  return header_;
}

void AppAuth::invalidate() {
  std::lock_guard lock(mutex_);
  invalidated_ = true;
}

int AppAuth::tokens_fetched() const {
  std::lock_guard lock(mutex_);
  return fetched_;
}

Result<Ok> AppAuth::fetch_locked() {
  const std::string what = "creating a GitHub App installation token";
  auto jwt = make_jwt();
  if (!jwt) return jwt.error();
  HttpRequest request;
  request.method = "POST";
  request.url =
      options_.api_url + "/app/installations/" + options_.installation_id + "/access_tokens";
  request.headers = {{"Accept", "application/vnd.github+json"},
                     {"X-GitHub-Api-Version", options_.api_version}};
  request.authorization = std::make_shared<const Secret>(bearer(jwt.value().expose()));
  // Sending it twice only mints a second token, which is harmless.
  request.idempotent = true;
  auto sent = transport_->send(std::move(request));
  if (!sent) {
    Error e = sent.error();
    e.message = what + ": " + e.message;
    return e;
  }
  HttpResponse& response = sent.value();
  if (response.status != 201 && response.status != 200) {
    Error e = github_error(what, response, clock_->now());
    sodium_memzero(response.body.data(), response.body.size());
    return e;
  }
  auto json = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  // The body holds the token: wiped as soon as it is parsed.
  sodium_memzero(response.body.data(), response.body.size());
  std::optional<Clock::time_point> expires;
  std::shared_ptr<const Secret> header;
  if (json.is_object()) {
    const auto token = json.find("token");
    const auto at = json.find("expires_at");
    if (at != json.end() && at->is_string())
      expires = parse_github_time(at->get_ref<std::string&>());
    if (token != json.end() && token->is_string()) {
      auto& text = token->get_ref<std::string&>();
      if (!text.empty()) header = std::make_shared<const Secret>(bearer(text));
      sodium_memzero(text.data(), text.size());
    }
  }
  if (!header || !expires) {
    return unavailable(what + ": GitHub's answer has no token and expires_at");
  }
  header_ = std::move(header);
  expires_at_ = *expires;
  invalidated_ = false;
  ++fetched_;
  logging::get("plugin.github")
      ->debug("installation {}: new token, expires {}", options_.installation_id,
              format_rfc3339(*expires));
  return Ok{};
}

HttpClientOptions http_client_options(const Settings& settings) {
  HttpClientOptions options;
  options.provider = settings.name;
  options.ca_file = settings.ca_file;
  options.rate_limit_headers = RateLimitHeaders::github;
  return options;
}

Result<std::unique_ptr<GithubAuth>> make_auth(const Settings& settings, const SecretSource& source,
                                              std::shared_ptr<HttpTransport> transport,
                                              std::shared_ptr<const Clock> clock) {
  if (settings.token_env) {
    auto token = TokenAuth::from_env(source, *settings.token_env);
    if (!token) return token.error();
    return std::unique_ptr<GithubAuth>(std::move(token).value());
  }
  if (!settings.app) {
    return permanent(invalid_argument("provider " + settings.name + ": no token_env and no app"));
  }
  auto key = source.from_file(settings.app->private_key_file);
  if (!key) {
    return permanent(Error{key.error().code, "GitHub App private key: " + key.error().message});
  }
  AppAuth::Options options;
  options.api_url = settings.api_url;
  options.app_id = settings.app->id;
  options.installation_id = settings.app->installation_id;
  options.api_version = settings.api_version;
  auto app = AppAuth::create(std::move(options), std::move(key).value(), std::move(transport),
                             std::move(clock));
  if (!app) return app.error();
  return std::unique_ptr<GithubAuth>(std::move(app).value());
}

}  // namespace orgd::github
