#pragma once

// .env files as dotenv and docker compose accept them (docs/secrets-files.md has the syntax):
// `KEY=value` lines, `#` comments, blank lines, an `export ` prefix, single quotes (literal),
// double quotes (\n \t \r \" \\ \$ escapes), quoted values over several lines. No variable
// interpolation: the two tools do not expand `${VAR}` the same way (compose does in unquoted and
// double-quoted values, dotenv never does), so a `$` is kept as written and the value a user sees
// in the file is the value orgd stores.
//
// Values live in Secret memory from the moment they are cut out of the text; errors and warnings
// name the file, the line and (for well-formed entries) the key, never a value or a piece of one.
// Writing back goes through DotenvDocument, which keeps comments, blank lines and order.
//
// The parser depends on core's Secret and errors alone (no bus, no plugin), so the fuzz build
// compiles it on its own.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::secrets {

// Larger input is refused before it is read: a .env is a few kilobytes, and every value costs
// a guarded allocation.
inline constexpr std::size_t kMaxDotenvBytes = 1 << 20;
inline constexpr std::size_t kMaxDotenvEntries = 4096;

struct DotenvEntry {
  std::string key;
  Secret value;
  int line = 0;  // where the key is (a multi-line value starts there)
};

struct DotenvWarning {
  int line = 0;
  std::string message;  // "file:line: ..." with names only
};

struct DotenvFile {
  // One entry per key, in the order keys first appear; a key given twice has the value and the
  // line of its last occurrence (dotenv's and compose's "last wins"), and a warning says so.
  std::vector<DotenvEntry> entries;
  std::vector<DotenvWarning> warnings;

  const DotenvEntry* find(std::string_view key) const;
};

// True for `[A-Za-z_][A-Za-z0-9_]*`: an environment variable name (and a name GitHub and
// Cloudflare take for a secret). Dots and dashes, which compose's parser lets through, are
// refused: such a name could not reach an exec command's environment.
bool valid_dotenv_key(std::string_view key);

// invalid_argument "file:line: ..." for the first problem: a line that is not `KEY=value`, a bad
// name, an unterminated quote (the line it opened on), text after a closing quote, a NUL byte,
// input over kMaxDotenvBytes or more than kMaxDotenvEntries entries.
Result<DotenvFile> parse_dotenv(std::string_view text, std::string_view file_name);

// A .env file as a document: its lines kept as written (in one Secret: a comment may hold a
// commented-out value), entries that can be read, set, removed and written back. Lines that are
// not changed render byte for byte as they were read; a changed entry keeps its `export `
// prefix, its indentation and its trailing comment, and its value is quoted as needed, so that
// parse_dotenv(render()) gives back exactly the entries of the document.
class DotenvDocument {
 public:
  static Result<DotenvDocument> parse(std::string_view text, std::string_view file_name);

  DotenvDocument() = default;
  DotenvDocument(DotenvDocument&&) noexcept = default;
  DotenvDocument& operator=(DotenvDocument&&) noexcept = default;

  const std::vector<DotenvWarning>& warnings() const { return warnings_; }
  // Distinct keys in the order they first appear.
  std::vector<std::string> keys() const;
  // The value that wins (the last occurrence's); null when the key is absent.
  const Secret* get(std::string_view key) const;
  // Replaces the value of the key's last occurrence in place, or appends `KEY=value` at the end.
  // invalid_argument for a bad key or a value with a NUL byte (neither names the value).
  Result<Ok> set(std::string_view key, Secret value);
  // Removes every occurrence of the key (with its trailing comment); false when there was none.
  bool remove(std::string_view key);
  // Every entry's value becomes empty (`KEY=`), duplicates included: what .env.example is made of.
  void blank_values();
  // The entries (as parse_dotenv returns them: one per key, the last value); their lines are
  // those of the parsed text, 0 for an entry set() appended.
  DotenvFile entries() const;
  // The whole file.
  Secret render() const;

 private:
  // A piece of the file: a line that is not an entry (blank, comment) or one entry with its
  // surroundings, all as offsets into source_, so nothing of the file is kept outside Secret
  // memory. A changed entry keeps prefix and suffix and gets its value rendered anew.
  struct Segment {
    std::size_t begin = 0, end = 0;  // the whole segment, its newline included
    bool is_entry = false;
    std::string key;
    Secret value;
    int line = 0;
    std::size_t prefix_end = 0;    // [begin, prefix_end): indentation and `export `
    std::size_t suffix_begin = 0;  // [suffix_begin, suffix_end): spaces and comment after it
    std::size_t suffix_end = 0;    // before the newline
    bool has_newline = false;
    bool changed = false;   // render the value anew
    bool appended = false;  // not from the source: `KEY=value` alone
  };

  const Segment* last_of(std::string_view key) const;
  Segment* last_of(std::string_view key);

  Secret source_;
  std::vector<Segment> segments_;
  std::vector<DotenvWarning> warnings_;
};

// `value` written so that the parser reads it back unchanged: bare when it is made of safe
// characters, else in single quotes, else (a `'` or a `\r` in it) in double quotes with escapes.
Secret quote_dotenv_value(std::string_view value);

}  // namespace orgd::secrets
