#pragma once

// A Worker version's upload (cloud-apis.md §2.4): a multipart/form-data body whose first part is
// `metadata` (JSON) and whose other parts are the module files, each named by its path inside
// the Worker's directory (what main_module refers to), with the content type Cloudflare reads
// the module's kind from.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"

namespace orgd::cloudflare {

struct FormPart {
  std::string name;      // the form field: "metadata", or the module's path ("index.js")
  std::string filename;  // "" for metadata
  std::string content_type;
  std::string body;
};

// The module's content type by its extension: .js/.mjs application/javascript+module, .cjs
// application/javascript, .py text/x-python, .wasm application/wasm, .map
// application/source-map, .txt/.html/.css/.json/.md text/plain, anything else
// application/octet-stream.
std::string module_content_type(std::string_view file_name);

// Every regular file under `dir` (recursively, sorted by path; hidden files and directories
// left out) as a part named by its relative path. Errors (permanent) for a directory that is
// not there, more than kMaxModules files, or more than kMaxUploadBytes together.
inline constexpr std::size_t kMaxModules = 1000;
inline constexpr std::size_t kMaxUploadBytes = 64u << 20;
Result<std::vector<FormPart>> module_parts(const std::string& dir);

// A boundary that occurs in none of `parts`.
std::string choose_boundary(const std::vector<FormPart>& parts);

// The body (CRLF line ends, RFC 7578) and its Content-Type header value.
std::string multipart_body(const std::vector<FormPart>& parts, const std::string& boundary);
inline std::string multipart_content_type(const std::string& boundary) {
  return "multipart/form-data; boundary=" + boundary;
}

}  // namespace orgd::cloudflare
