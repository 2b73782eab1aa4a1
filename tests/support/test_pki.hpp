#pragma once

#include <string>

#include "tests/support/temp_dir.hpp"

namespace orgd::testing {

// A CA, a server certificate for 127.0.0.1 (and localhost) and a client certificate, made with
// the openssl command in a temporary directory: ca.pem, server.pem, server-key.pem,
// client.pem, client-key.pem.
struct TestPki {
  TempDir dir{"orgd-pki"};
  std::string path(const char* name) const { return (dir / name).string(); }
  // False when openssl could not make them.
  bool make();
  // A nats-server `tls {}` block serving server.pem; `verify`: clients need a certificate.
  std::string server_tls_block(bool verify) const;
};

}  // namespace orgd::testing
