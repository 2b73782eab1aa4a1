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
#include "tests/support/test_pki.hpp"

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
  good.token = Secret::from("tok-9f3a");
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.token = Secret::from("wrong");
  EXPECT_THROW(connects(bad), std::runtime_error);
}

TEST(NatsConnectionAuth, UserAndPassword) {
  NatsServer server(server_with_config("authorization { user: orgd, password: \"pw-77c1\" }\n"));
  auto good = auth_settings(server.url());
  good.user = "orgd";
  good.password = Secret::from("pw-77c1");
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.user = "orgd";
  bad.password = Secret::from("nope");
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
  good.nkey_seed = Secret::from(seed);
  EXPECT_TRUE(connects(good));
  auto bad = auth_settings(server.url());
  bad.nkey_seed = Secret::from(other);
  EXPECT_THROW(connects(bad), std::runtime_error);
  auto garbage = auth_settings(server.url());
  garbage.nkey_seed = Secret::from("SUNOTASEED");
  EXPECT_THROW(connects(garbage), std::runtime_error);
}

TEST(NatsConnectionAuth, TlsWithClientCertificate) {
  testing::TestPki pki;
  ASSERT_TRUE(pki.make()) << "openssl could not make the test certificates";
  NatsServer server(server_with_config(pki.server_tls_block(/*verify=*/true)));
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
