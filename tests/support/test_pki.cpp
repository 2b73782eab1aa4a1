#include "tests/support/test_pki.hpp"

#include <cstdlib>

namespace orgd::testing {

bool TestPki::make() {
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

std::string TestPki::server_tls_block(bool verify) const {
  return "tls {\n  cert_file: \"" + path("server.pem") + "\"\n  key_file: \"" +
         path("server-key.pem") + "\"\n  ca_file: \"" + path("ca.pem") + "\"\n  verify: " +
         (verify ? "true" : "false") + "\n}\n";
}

}  // namespace orgd::testing
