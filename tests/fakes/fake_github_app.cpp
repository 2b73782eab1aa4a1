// GitHub App auth: the App's RSA key pair, RS256 JWT checks and installation tokens
// (cloud-apis.md §1.4).

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>
#include <stdexcept>

#include "tests/fakes/fake_github_internal.hpp"

namespace orgd::testing {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace

void FakeGithub::State::ensure_app_key() const {
  if (!app_private_pem.empty()) return;
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_RSA_gen(2048));
  if (!key) throw std::runtime_error("OpenSSL could not make the App's RSA key");
  std::unique_ptr<BIO, BioFree> priv(BIO_new(BIO_s_mem())), pub(BIO_new(BIO_s_mem()));
  // PKCS#1 ("BEGIN RSA PRIVATE KEY"), the form GitHub hands out for App keys.
  if (PEM_write_bio_PrivateKey_traditional(priv.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                           nullptr) != 1 ||
      PEM_write_bio_PUBKEY(pub.get(), key.get()) != 1) {
    throw std::runtime_error("OpenSSL could not write the App's key");
  }
  app_private_pem = bio_string(priv.get());
  app_public_pem = bio_string(pub.get());
  app_dir = std::make_unique<TempDir>("orgd-fake-github-app");
  app_private_file = (*app_dir / "app-private-key.pem").string();
  write_file(app_private_file, app_private_pem);
}

namespace github_fake {

namespace {

using State = FakeGithub::State;

// The JWT may claim an issue time this far ahead of the fake's clock.
constexpr std::chrono::seconds kIatSkew{5};
constexpr std::chrono::seconds kMaxLifetime{600};

std::optional<std::string> unbase64url(std::string_view text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

bool rs256_valid(const std::string& public_pem, const std::string& signed_part,
                 const std::string& signature) {
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(public_pem.data(), static_cast<int>(public_pem.size())));
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!key || !ctx) return false;
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(),
                          reinterpret_cast<const unsigned char*>(signed_part.data()),
                          signed_part.size()) == 1;
}

Reply jwt_refused(const std::string& message) { return error(401, message); }

// The JWT's failure, or nullopt when it is good for this App.
std::optional<Reply> check_jwt(const State& st, const std::string& jwt, TimePoint now) {
  const auto d1 = jwt.find('.');
  const auto d2 = d1 == std::string::npos ? d1 : jwt.find('.', d1 + 1);
  if (d2 == std::string::npos || jwt.find('.', d2 + 1) != std::string::npos) {
    return jwt_refused("A JSON web token could not be decoded");
  }
  auto header = unbase64url(std::string_view(jwt).substr(0, d1));
  auto claims = unbase64url(std::string_view(jwt).substr(d1 + 1, d2 - d1 - 1));
  auto signature = unbase64url(std::string_view(jwt).substr(d2 + 1));
  if (!header || !claims || !signature) return jwt_refused("A JSON web token could not be decoded");
  json h = json::parse(*header, nullptr, false);
  json c = json::parse(*claims, nullptr, false);
  if (!h.is_object() || !c.is_object()) {
    return jwt_refused("A JSON web token could not be decoded");
  }
  if (h.value("alg", "") != "RS256") {
    return jwt_refused("A JSON web token could not be decoded");
  }
  if (!rs256_valid(st.app_public_pem, jwt.substr(0, d2), *signature)) {
    return jwt_refused("A JSON web token could not be decoded");
  }
  const json& iss = c.contains("iss") ? c["iss"] : json(nullptr);
  const bool iss_ok =
      (iss.is_number_integer() && iss.get<std::int64_t>() == st.options.app_id) ||
      (iss.is_string() && (iss.get<std::string>() == std::to_string(st.options.app_id) ||
                           iss.get<std::string>() == st.options.app_client_id));
  if (!iss_ok) return jwt_refused("'Issuer' claim ('iss') must be an Integer");
  const auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (!c.contains("iat") || !c["iat"].is_number() ||
      c["iat"].get<double>() > static_cast<double>(now_s + kIatSkew.count())) {
    return jwt_refused(
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
        "was issued");
  }
  if (!c.contains("exp") || !c["exp"].is_number() ||
      c["exp"].get<double>() <= static_cast<double>(now_s)) {
    return jwt_refused(
        "'Expiration time' claim ('exp') must be a numeric value representing the future time "
        "at which the assertion expires");
  }
  if (c["exp"].get<double>() > static_cast<double>(now_s + kMaxLifetime.count())) {
    return jwt_refused("'Expiration time' claim ('exp') is too far in the future");
  }
  return std::nullopt;
}

// Installation tokens now vary in length and run to hundreds of characters (cloud-apis.md
// §1.4); the old 40-character form is kept for the opt-out header.
std::string new_token(const State& st, bool stateless) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  auto random_chars = [](std::size_t n, bool with_dots) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      if (with_dots && i > 0 && i % 97 == 0) {
        out.push_back('.');
        continue;
      }
      out.push_back(alphabet[randombytes_uniform(sizeof alphabet - 1)]);
    }
    return out;
  };
  if (!stateless) return "ghs_" + random_chars(36, false);
  const std::size_t length = 380 + randombytes_uniform(200);
  return "ghs_" + std::to_string(st.options.app_id) + "_" + random_chars(length, true);
}

Reply access_tokens(State& st, Ctx& ctx) {
  const std::string auth = ctx.request.header("authorization");
  if (auth.empty()) return error(401, "Requires authentication");
  const auto space = auth.find(' ');
  if (space == std::string::npos || lower(auth.substr(0, space)) != "bearer") {
    return jwt_refused("A JSON web token could not be decoded");
  }
  st.ensure_app_key();
  if (auto refused = check_jwt(st, auth.substr(space + 1), ctx.now)) return *refused;
  if (ctx.param("installation_id") != std::to_string(st.options.installation_id)) {
    return not_found();
  }
  json body = ctx.body();
  json permissions{{"actions", "write"},
                   {"secrets", "write"},
                   {"deployments", "write"},
                   {"environments", "write"},
                   {"organization_secrets", "write"},
                   {"metadata", "read"}};
  if (body.is_object() && body.contains("permissions") && body["permissions"].is_object()) {
    permissions = body["permissions"];
  }
  const bool stateless = lower(ctx.request.header("x-github-stateless-s2s-token")) != "disabled";
  std::string token = new_token(st, stateless);
  const TimePoint expires = std::chrono::time_point_cast<std::chrono::seconds>(ctx.now) +
                            st.options.installation_token_lifetime;
  st.installation_tokens[token] = expires;
  return created(json{{"token", token},
                      {"expires_at", iso8601(expires)},
                      {"permissions", permissions},
                      {"repository_selection", "all"}});
}

}  // namespace

void add_app_routes(std::vector<Route>& routes) {
  routes.push_back(
      {"POST", "/app/installations/{installation_id}/access_tokens", access_tokens, false});
}

}  // namespace github_fake
}  // namespace orgd::testing
