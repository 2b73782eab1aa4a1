// orgd's NatsConnection against real nats-servers that demand each kind of credential orgd
// supports: token, user + password, nkey seed, TLS with a client certificate. A wrong credential
// fails with a clear error.
#include <gtest/gtest.h>

#include <cstdlib>

#include "daemon/bus/nats_connection.hpp"
#include "daemon/bus/nkeys.hpp"
#include "tests/support/nats_auth.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using namespace std::chrono_literals;
using testing::NatsServer;

using testing::auth_settings;
using testing::connects;
using testing::server_with_config;

TEST(NatsConnectionAuth, Token) {
  NatsServer server(server_with_config("authorization { token: \"tok-9f3a\" }\n"));
  auto good = auth_settings(server.url());
  good.token = "tok-9f3a";
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.token = "wrong";
  EXPECT_THROW(connects(bad), std::runtime_error);
}

TEST(NatsConnectionAuth, UserAndPassword) {
  NatsServer server(server_with_config("authorization { user: orgd, password: \"pw-77c1\" }\n"));
  auto good = auth_settings(server.url());
  good.user = "orgd";
  good.password = "pw-77c1";
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.user = "orgd";
  bad.password = "nope";
  try {
    connects(bad);
    FAIL() << "a wrong password must not connect";
  } catch (const std::runtime_error& e) {
    // The error names the server, never the password.
    EXPECT_EQ(std::string(e.what()).find("nope"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(server.url()), std::string::npos) << e.what();
  }
}

TEST(NatsConnectionAuth, NkeySeed) {
  const std::string seed = nkeys::create_user_seed();
  const std::string other = nkeys::create_user_seed();
  NatsServer server(server_with_config("authorization { users = [ { nkey: " +
                                nkeys::public_key_from_seed(seed) + " } ] }\n"));
  auto good = auth_settings(server.url());
  good.nkey_seed = seed;
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.nkey_seed = other;
  EXPECT_THROW(connects(bad), std::runtime_error);
  auto garbage = auth_settings(server.url());
  garbage.nkey_seed = "SUNOTASEED";
  EXPECT_THROW(connects(garbage), std::runtime_error);
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
struct Pki {
  testing::TempDir dir{"orgd-pki"};
  std::string path(const char* name) const { return (dir / name).string(); }

  bool make() {
    const std::string d = dir.str();
    const std::string script =
        "set -e; cd '" + d + "';"
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=orgd-test-ca "
        "-keyout ca-key.pem -out ca.pem >/dev/null 2>&1;"
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext;"
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem "
        "-out server.csr >/dev/null 2>&1;"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 "
        "-extfile san.ext -out server.pem >/dev/null 2>&1;"
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext;"
        "openssl req -newkey rsa:2048 -nodes -subj /CN=orgd -keyout client-key.pem "
        "-out client.csr >/dev/null 2>&1;"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 "
        "-extfile client.ext -out client.pem >/dev/null 2>&1";
    return std::system(("bash -c \"" + script + "\"").c_str()) == 0;
  }
};

TEST(NatsConnectionAuth, TlsWithClientCertificate) {
  Pki pki;
  ASSERT_TRUE(pki.make()) << "openssl could not make the test certificates";
  NatsServer server(server_with_config("tls {\n  cert_file: \"" + pki.path("server.pem") +
                                "\"\n  key_file: \"" + pki.path("server-key.pem") +
                                "\"\n  ca_file: \"" + pki.path("ca.pem") +
                                "\"\n  verify: true\n}\n"));
  auto good = auth_settings(server.url());
  good.tls = {pki.path("ca.pem"), pki.path("client.pem"), pki.path("client-key.pem")};
  EXPECT_TRUE(connects(good));

  auto no_client_cert = auth_settings(server.url());
  no_client_cert.tls = {pki.path("ca.pem"), "", ""};
  EXPECT_THROW(connects(no_client_cert), std::runtime_error);

  auto plain = auth_settings(server.url());
  EXPECT_THROW(connects(plain), std::runtime_error);

  auto missing_ca = auth_settings(server.url());
  missing_ca.tls = {pki.path("absent.pem"), "", ""};
  EXPECT_THROW(connects(missing_ca), std::runtime_error);
}

}  // namespace
}  // namespace orgd
