#include "daemon/core/secret_source.hpp"

#include <fmt/format.h>

#include <fstream>
#include <system_error>

namespace orgd {

Result<Secret> SecretSource::from_env(const std::string& variable) const {
  auto value = env_.get(variable);
  const auto file = env_.get(variable + "_FILE");
  const bool has_value = value && !value->empty();
  const bool has_file = file && !file->empty();
  if (has_value && has_file) {
    return invalid_argument(fmt::format(
        "both {0} and {0}_FILE are set: give the value or the file that holds it, not both",
        variable));
  }
  if (has_file) {
    auto secret = from_file(*file);
    if (!secret) {
      return Error{secret.error().code,
                   fmt::format("{}_FILE: {}", variable, secret.error().message)};
    }
    return secret;
  }
  if (!has_value) return not_found(fmt::format("environment variable {} is not set", variable));
  return Secret::take(std::move(*value));
}

Result<Secret> SecretSource::from_file(const std::filesystem::path& path) const {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return not_found(fmt::format("secret file {} does not exist", path.string()));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return invalid_argument(fmt::format("secret file {} is not a regular file", path.string()));
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return invalid_argument(fmt::format("secret file {}: {}", path.string(), ec.message()));
  if (size > kMaxFileBytes) {
    return invalid_argument(fmt::format("secret file {} is {} bytes; at most {} are read",
                                        path.string(), size, kMaxFileBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument(fmt::format("secret file {} cannot be read", path.string()));
  std::string bytes(static_cast<std::size_t>(size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  if (!bytes.empty() && bytes.back() == '\n') bytes.pop_back();
  if (!bytes.empty() && bytes.back() == '\r') bytes.pop_back();
  return Secret::take(std::move(bytes));
}

}  // namespace orgd
