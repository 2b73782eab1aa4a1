#include "daemon/core/file_checks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace orgd {

std::vector<NamedFile> nats_files(const NatsConfig& nats) {
  std::vector<NamedFile> out;
  auto add = [&](const char* key, const std::string& path) {
    if (!path.empty()) out.push_back({key, path, false});
  };
  add("nats.creds_file", nats.creds_file);
  add("nats.nkey_file", nats.nkey_file);
  add("nats.tls.ca_file", nats.tls.ca_file);
  add("nats.tls.cert_file", nats.tls.cert_file);
  add("nats.tls.key_file", nats.tls.key_file);
  if (nats.embedded) add("nats.server_include", nats.server_include);
  return out;
}

std::vector<std::string> unreadable_files(const std::vector<NamedFile>& files) {
  namespace fs = std::filesystem;
  std::vector<std::string> problems;
  for (const auto& file : files) {
    auto problem = [&](const std::string& reason) {
      problems.push_back(file.key + ": " + file.path + ": " + reason);
    };
    std::error_code ec;
    const auto status = fs::status(file.path, ec);
    if (ec || !fs::exists(status)) {
      problem(ec ? ec.message() : "does not exist");
      continue;
    }
    if (file.directory) {
      if (!fs::is_directory(status)) {
        problem("is not a directory");
      } else if (::access(file.path.c_str(), R_OK | X_OK) != 0) {
        problem(std::strerror(errno));
      }
      continue;
    }
    if (fs::is_directory(status)) {
      problem("is a directory, not a file");
      continue;
    }
    // Opening is the test that counts (access() answers for the real, not the effective, user).
    const int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
      problem(std::strerror(errno));
      continue;
    }
    ::close(fd);
  }
  return problems;
}

}  // namespace orgd
