// Any bytes, read as a .env file: the parser returns entries or an error naming the line, never
// crashes or reads out of bounds; and what parses writes back (render) into text that parses to
// the same entries, also after every value is changed (set), emptied (blank_values) or removed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/secrets/dotenv.hpp"

namespace {

using orgd::Secret;
using orgd::secrets::DotenvDocument;
using orgd::secrets::DotenvFile;
using orgd::secrets::parse_dotenv;

void same_or_trap(const DotenvFile& a, const DotenvFile& b) {
  if (a.entries.size() != b.entries.size()) __builtin_trap();
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    if (a.entries[i].key != b.entries[i].key) __builtin_trap();
    if (!a.entries[i].value.equals(b.entries[i].value)) __builtin_trap();
  }
}

DotenvFile reparse_or_trap(const DotenvDocument& doc) {
  const Secret text = doc.render();
  auto again = parse_dotenv(text.expose(), "rendered");
  if (!again) __builtin_trap();
  same_or_trap(doc.entries(), again.value());
  return std::move(again).value();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto doc = DotenvDocument::parse(text, "fuzz.env");
  auto file = parse_dotenv(text, "fuzz.env");
  if (doc.ok() != file.ok()) __builtin_trap();
  if (!doc) {
    if (doc.error().message.rfind("fuzz.env", 0) != 0) __builtin_trap();
    return 0;
  }
  // Unchanged, the document renders byte for byte what it read.
  if (doc.value().render().expose() != text) __builtin_trap();
  same_or_trap(doc.value().entries(), file.value());

  // Each value replaced by the input's own bytes (NULs cut out): quoting must hold any value.
  std::string other{text.substr(0, 64)};
  other.erase(std::remove(other.begin(), other.end(), '\0'), other.end());
  for (const auto& key : doc.value().keys()) {
    if (!doc.value().set(key, Secret::from(other)).ok()) __builtin_trap();
  }
  if (!doc.value().set("FUZZ_APPENDED", Secret::from(other)).ok()) __builtin_trap();
  reparse_or_trap(doc.value());
  doc.value().remove("FUZZ_APPENDED");
  doc.value().blank_values();
  const DotenvFile blank = reparse_or_trap(doc.value());
  for (const auto& e : blank.entries) {
    if (!e.value.empty()) __builtin_trap();
  }
  return 0;
}
