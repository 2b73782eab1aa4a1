#include "plugins/cloudflare/multipart.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace orgd::cloudflare {

namespace {

namespace fs = std::filesystem;

std::string extension_of(std::string_view name) {
  const auto slash = name.rfind('/');
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return {};
  std::string ext{name.substr(dot)};
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

// A form field name or file name inside the quotes of Content-Disposition.
std::string form_quoted(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '"') {
      out += "%22";
    } else if (c == '\r' || c == '\n') {
      out += ' ';
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string module_content_type(std::string_view file_name) {
  const std::string ext = extension_of(file_name);
  if (ext == ".js" || ext == ".mjs") return "application/javascript+module";
  if (ext == ".cjs") return "application/javascript";
  if (ext == ".py") return "text/x-python";
  if (ext == ".wasm") return "application/wasm";
  if (ext == ".map") return "application/source-map";
  if (ext == ".txt" || ext == ".html" || ext == ".css" || ext == ".json" || ext == ".md" ||
      ext == ".svg" || ext == ".csv") {
    return "text/plain";
  }
  return "application/octet-stream";
}

Result<std::vector<FormPart>> module_parts(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return permanent(invalid_argument("the Worker's dir " + dir + " is not a directory"));
  }
  std::vector<FormPart> parts;
  std::size_t total = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) return permanent(invalid_argument("cannot read " + dir + ": " + ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) return permanent(invalid_argument("cannot read " + dir + ": " + ec.message()));
    const fs::path& path = it->path();
    const std::string leaf = path.filename().string();
    if (!leaf.empty() && leaf.front() == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const std::string relative = fs::relative(path, dir, ec).generic_string();
    if (ec || relative.empty()) continue;
    if (parts.size() >= kMaxModules) {
      return permanent(invalid_argument(
          fmt::format("the Worker's dir {} has more than {} files", dir, kMaxModules)));
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) return permanent(invalid_argument("cannot read " + path.string()));
    std::ostringstream bytes;
    bytes << in.rdbuf();
    FormPart part;
    part.name = relative;
    part.filename = relative;
    part.content_type = module_content_type(relative);
    part.body = std::move(bytes).str();
    total += part.body.size();
    if (total > kMaxUploadBytes) {
      return permanent(invalid_argument(fmt::format(
          "the Worker's dir {} holds more than {} MiB", dir, kMaxUploadBytes >> 20)));
    }
    parts.push_back(std::move(part));
  }
  std::sort(parts.begin(), parts.end(),
            [](const FormPart& a, const FormPart& b) { return a.name < b.name; });
  return parts;
}

std::string choose_boundary(const std::vector<FormPart>& parts) {
  for (unsigned n = 0;; ++n) {
    const std::string boundary = fmt::format("orgd-form-boundary-{:08x}", 0x5eed1u * (n + 1));
    const bool clash = std::any_of(parts.begin(), parts.end(), [&](const FormPart& p) {
      return p.body.find(boundary) != std::string::npos ||
             p.name.find(boundary) != std::string::npos;
    });
    if (!clash) return boundary;
  }
}

std::string multipart_body(const std::vector<FormPart>& parts, const std::string& boundary) {
  std::string out;
  std::size_t size = 0;
  for (const auto& p : parts) size += p.body.size() + p.name.size() * 2 + 200;
  out.reserve(size);
  for (const auto& p : parts) {
    out += "--" + boundary + "\r\n";
    out += "Content-Disposition: form-data; name=\"" + form_quoted(p.name) + "\"";
    if (!p.filename.empty()) out += "; filename=\"" + form_quoted(p.filename) + "\"";
    out += "\r\nContent-Type: " + p.content_type + "\r\n\r\n";
    out += p.body;
    out += "\r\n";
  }
  out += "--" + boundary + "--\r\n";
  return out;
}

}  // namespace orgd::cloudflare
