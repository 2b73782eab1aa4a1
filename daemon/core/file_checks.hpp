#pragma once

#include <string>
#include <vector>

#include "daemon/core/config.hpp"

namespace orgd {

// A file (or directory) the config names, by its dotted key ("nats.creds_file").
struct NamedFile {
  std::string key;
  std::string path;
  bool directory = false;
};

// The credential and TLS files of `nats:` that are set: creds_file, nkey_file, tls.ca_file,
// tls.cert_file, tls.key_file (after environment overrides, so NATS_CREDS_FILE counts too).
std::vector<NamedFile> nats_files(const NatsConfig& nats);

// "<key>: <path>: <reason>" for every entry that does not exist, is not of its kind (file or
// directory) or cannot be read by this process; empty when all are fine. Contents are never
// read beyond a first byte, nor shown.
std::vector<std::string> unreadable_files(const std::vector<NamedFile>& files);

}  // namespace orgd
