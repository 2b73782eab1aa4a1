#pragma once

#include <filesystem>
#include <string>

namespace orgd::testing {

// A fresh directory (mkdtemp under $TMPDIR, else /tmp), removed with its content when the
// object is destroyed. `prefix` shows up in the directory name to tell tests apart.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "orgd-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  // path() / name, for files and subdirectories inside it.
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

  // Keeps the directory on destruction (to look at a failing test's files).
  void keep() { keep_ = true; }

 private:
  void remove() noexcept;
  std::filesystem::path path_;
  bool keep_ = false;
};

// Writes `content` to `path` (truncating), creating parent directories; throws on failure.
void write_file(const std::filesystem::path& path, const std::string& content);
// The whole content of a file, or "" if it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace orgd::testing
