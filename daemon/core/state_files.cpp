#include "daemon/core/state_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <system_error>

#include "daemon/core/unique_fd.hpp"

namespace orgd {

namespace fs = std::filesystem;

bool safe_path_component(const std::string& part) {
  return !part.empty() && part != "." && part != ".." && part.find('/') == std::string::npos &&
         part.find('\0') == std::string::npos;
}

Result<Ok> write_file_atomically(const fs::path& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return unavailable("cannot create " + path.parent_path().string() + ": " + ec.message());
  // Unique per writer, so two threads writing the same path never share a temporary file.
  static std::atomic<std::uint64_t> sequence{0};
  const fs::path temporary = path.string() + ".tmp." + std::to_string(::getpid()) + "." +
                             std::to_string(sequence.fetch_add(1));
  {
    std::ofstream out{temporary, std::ios::binary | std::ios::trunc};
    out << content;
    out.flush();
    if (!out) {
      fs::remove(temporary, ec);
      return unavailable("cannot write " + temporary.string());
    }
  }
  fs::rename(temporary, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    return unavailable("cannot rename to " + path.string() + ": " + ec.message());
  }
  return Ok{};
}

Result<Ok> append_line(const fs::path& path, const std::string& line) {
  UniqueFd fd{::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)};
  if (fd.get() < 0) {
    return unavailable("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  const ssize_t written = ::write(fd.get(), line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) {
    return unavailable("cannot append to " + path.string() + ": " +
                       (written < 0 ? std::strerror(errno) : "short write"));
  }
  return Ok{};
}


}  // namespace orgd
