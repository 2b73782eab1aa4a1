#pragma once

// Where a credential comes from: an environment variable (`token_env`, `password_env`) or a
// file (`private_key_file`, a mounted secret). Code that needs a credential asks this instead of
// calling getenv or reading the file itself, so the value goes straight into a Secret and a
// test gives it values without touching the process.

#include <cstddef>
#include <filesystem>
#include <string>

#include "daemon/core/environment.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd {

class SecretSource {
 public:
  // Larger files are refused: a credential is a few KB, and a wrong path (a log, an image)
  // should not be read into locked memory.
  static constexpr std::size_t kMaxFileBytes = 64 * 1024;

  explicit SecretSource(Environment env) : env_(std::move(env)) {}

  // not_found when the variable is unset or empty ("environment variable X is not set"). When
  // X is unset and X_FILE names a file, the file's bytes (as from_file): the convention of
  // container images for secrets mounted as files (/run/secrets/...). Both set is an error.
  Result<Secret> from_env(const std::string& variable) const;
  // The file's bytes, one trailing newline (what `echo` adds) removed. not_found when it is
  // missing, invalid_argument when it cannot be read, is not a regular file or is too large;
  // messages name the file, never its contents.
  Result<Secret> from_file(const std::filesystem::path& path) const;

 private:
  Environment env_;
};

}  // namespace orgd
