#pragma once

#include <filesystem>
#include <string>

#include "daemon/core/errors.hpp"

// Small files providers keep under orgd's data dir (release records, markers, results, logs).
namespace orgd {

// A repo, env or deploy id used as one path component: refuses what could leave the data dir
// ("", ".", "..", "/", NUL).
bool safe_path_component(const std::string& part);

// Writes `content` to a temporary file next to `path` and renames it into place, so a reader
// (another thread, a resumed orgd) never sees half a file. Creates the parent directories.
Result<Ok> write_file_atomically(const std::filesystem::path& path, const std::string& content);

// Appends `line` (with its newline) in one write() on an O_APPEND descriptor: the kernel places
// each such write at the end as a whole, so lines from concurrent writers never interleave.
Result<Ok> append_line(const std::filesystem::path& path, const std::string& line);

}  // namespace orgd
