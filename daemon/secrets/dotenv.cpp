#include "daemon/secrets/dotenv.hpp"

#include <sodium.h>

#include <algorithm>
#include <map>
#include <utility>

namespace orgd::secrets {
namespace {

// A buffer for a value while it is cut out of the text: reserved once to its largest possible
// size, so it never reallocates (a reallocation would leave an unwiped copy behind), and wiped
// when it is handed over or dropped.
class ValueBuffer {
 public:
  explicit ValueBuffer(std::size_t capacity) { bytes_.reserve(capacity); }
  ~ValueBuffer() { wipe(); }
  ValueBuffer(const ValueBuffer&) = delete;
  ValueBuffer& operator=(const ValueBuffer&) = delete;

  void push(char c) { bytes_.push_back(c); }
  void append(std::string_view s) { bytes_.append(s); }
  std::size_t size() const { return bytes_.size(); }
  Secret take() {
    Secret out = Secret::from(bytes_);
    wipe();
    return out;
  }

 private:
  void wipe() {
    if (bytes_.capacity() > 0) sodium_memzero(bytes_.data(), bytes_.capacity());
    bytes_.clear();
  }
  std::string bytes_;
};

bool is_blank(char c) { return c == ' ' || c == '\t'; }
bool key_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool key_char(char c) { return key_start(c) || (c >= '0' && c <= '9'); }

// Characters a bare value may hold and still read back unchanged, here and in compose (which
// would expand a `$` and cut at a ` #`).
bool bare_safe(char c) {
  return key_char(c) || std::string_view{"-./:@%+,=~^"}.find(c) != std::string_view::npos;
}

std::string where(std::string_view file, int line) {
  return std::string{file} + ":" + std::to_string(line) + ": ";
}

}  // namespace

bool valid_dotenv_key(std::string_view key) {
  if (key.empty() || !key_start(key[0])) return false;
  return std::all_of(key.begin(), key.end(), key_char);
}

const DotenvEntry* DotenvFile::find(std::string_view key) const {
  for (const auto& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

Result<DotenvDocument> DotenvDocument::parse(std::string_view text, std::string_view file_name) {
  if (text.size() > kMaxDotenvBytes) {
    return invalid_argument(std::string{file_name} + ": larger than " +
                            std::to_string(kMaxDotenvBytes) + " bytes");
  }
  {
    int line = 1;
    for (const char c : text) {
      if (c == '\0') return invalid_argument(where(file_name, line) + "NUL byte");
      if (c == '\n') ++line;
    }
  }
  DotenvDocument doc;
  doc.source_ = Secret::from(text);
  const std::string_view src = doc.source_.expose();
  const std::size_t n = src.size();
  std::size_t pos = 0;
  int line = 1;
  std::map<std::string, int, std::less<>> seen;  // key -> line of its latest occurrence
  std::size_t entries = 0;

  auto line_end = [&](std::size_t from) {
    const auto nl = src.find('\n', from);
    return nl == std::string_view::npos ? n : nl;
  };

  while (pos < n) {
    Segment seg;
    seg.begin = pos;
    seg.line = line;
    std::size_t p = pos;
    while (p < n && is_blank(src[p])) ++p;
    // Blank lines (a lone \r of CRLF included) and comments are kept as they are.
    if (p >= n || src[p] == '\n' || src[p] == '#' ||
        (src[p] == '\r' && (p + 1 >= n || src[p + 1] == '\n'))) {
      const std::size_t e = line_end(p);
      seg.end = e < n ? e + 1 : n;
      seg.has_newline = e < n;
      pos = seg.end;
      doc.segments_.push_back(std::move(seg));
      ++line;
      continue;
    }
    const std::string here = where(file_name, line);
    // `export KEY=...`: the word alone (or `export=...`) is a key.
    if (src.substr(p, 6) == "export" && p + 6 < n && is_blank(src[p + 6])) {
      std::size_t q = p + 6;
      while (q < n && is_blank(src[q])) ++q;
      if (q < n && key_start(src[q])) p = q;
    }
    seg.prefix_end = p;
    if (!key_start(src[p])) {
      return invalid_argument(here + "expected KEY=value (a name starts with a letter or _)");
    }
    std::size_t k = p;
    while (k < n && key_char(src[k])) ++k;
    const std::string_view key = src.substr(p, k - p);
    std::size_t q = k;
    while (q < n && is_blank(src[q])) ++q;
    if (q >= n || src[q] != '=') {
      // The name is not repeated: a line without '=' may be a pasted value.
      if (q < n && src[q] != '\n' && src[q] != '\r' && !is_blank(src[q]) && q == k) {
        return invalid_argument(here + "not a valid name: a name holds letters, digits and _ only");
      }
      return invalid_argument(here + "no '=' after the name");
    }
    ++q;
    while (q < n && is_blank(src[q])) ++q;

    const int entry_line = line;
    const std::size_t rest_end = line_end(q);
    std::size_t suffix_begin = 0;
    Secret value;
    if (q < n && (src[q] == '\'' || src[q] == '"')) {
      const char quote = src[q];
      const std::size_t open = q;
      ValueBuffer buf{n - open};
      std::size_t r = open + 1;
      bool closed = false;
      while (r < n) {
        const char c = src[r];
        if (c == quote) {
          closed = true;
          break;
        }
        if (c == '\n') ++line;
        if (c == '\r' && r + 1 < n && src[r + 1] == '\n') {
          ++r;  // CRLF inside a quoted value reads as LF
          continue;
        }
        if (quote == '"' && c == '\\' && r + 1 < n) {
          const char e = src[r + 1];
          switch (e) {
            case 'n':
              buf.push('\n');
              break;
            case 't':
              buf.push('\t');
              break;
            case 'r':
              buf.push('\r');
              break;
            case '"':
              buf.push('"');
              break;
            case '\\':
              buf.push('\\');
              break;
            case '$':
              buf.push('$');
              break;
            default:
              // Unknown escapes stay as written, as dotenv keeps them; the next character is
              // read as any other.
              buf.push('\\');
              ++r;
              continue;
          }
          r += 2;
          continue;
        }
        buf.push(c);
        ++r;
      }
      if (!closed) {
        return invalid_argument(here + "unterminated " +
                                (quote == '"' ? std::string{"double"} : std::string{"single"}) +
                                "-quoted value (opened on this line, never closed)");
      }
      value = buf.take();
      std::size_t after = r + 1;
      suffix_begin = after;
      while (after < n && (is_blank(src[after]) || src[after] == '\r')) ++after;
      if (after < n && src[after] != '\n' && src[after] != '#') {
        return invalid_argument(where(file_name, line) +
                                "unexpected text after the closing quote of " + std::string{key});
      }
      seg.suffix_begin = suffix_begin;
      seg.suffix_end = line_end(after);
      if (seg.suffix_end > suffix_begin && src[seg.suffix_end - 1] == '\r') --seg.suffix_end;
    } else {
      // Bare: up to a '#' that follows a blank, then trimmed.
      std::size_t r = q;
      while (r < rest_end && !(src[r] == '#' && is_blank(src[r - 1]))) ++r;
      std::size_t value_end = r;
      while (value_end > q && (is_blank(src[value_end - 1]) || src[value_end - 1] == '\r')) {
        --value_end;
      }
      value = Secret::from(src.substr(q, value_end - q));
      seg.suffix_begin = value_end;
      seg.suffix_end = rest_end;
      if (seg.suffix_end > value_end && src[seg.suffix_end - 1] == '\r') --seg.suffix_end;
    }
    const std::size_t e = line_end(seg.suffix_end);
    seg.end = e < n ? e + 1 : n;
    seg.has_newline = e < n;
    seg.is_entry = true;
    seg.key = std::string{key};
    seg.value = std::move(value);
    seg.line = entry_line;
    if (++entries > kMaxDotenvEntries) {
      return invalid_argument(here + "more than " + std::to_string(kMaxDotenvEntries) + " entries");
    }
    if (const auto it = seen.find(key); it != seen.end()) {
      doc.warnings_.push_back({entry_line, here + seg.key + " is also set on line " +
                                               std::to_string(it->second) +
                                               "; the last one (this line) is used"});
      it->second = entry_line;
    } else {
      seen.emplace(seg.key, entry_line);
    }
    pos = seg.end;
    doc.segments_.push_back(std::move(seg));
    ++line;
  }
  return doc;
}

std::vector<std::string> DotenvDocument::keys() const {
  std::vector<std::string> out;
  for (const auto& seg : segments_) {
    if (seg.is_entry && std::find(out.begin(), out.end(), seg.key) == out.end()) {
      out.push_back(seg.key);
    }
  }
  return out;
}

const DotenvDocument::Segment* DotenvDocument::last_of(std::string_view key) const {
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    if (it->is_entry && it->key == key) return &*it;
  }
  return nullptr;
}

DotenvDocument::Segment* DotenvDocument::last_of(std::string_view key) {
  return const_cast<Segment*>(std::as_const(*this).last_of(key));
}

const Secret* DotenvDocument::get(std::string_view key) const {
  const Segment* seg = last_of(key);
  return seg == nullptr ? nullptr : &seg->value;
}

Result<Ok> DotenvDocument::set(std::string_view key, Secret value) {
  if (!valid_dotenv_key(key)) {
    return invalid_argument("not a valid name: a name holds letters, digits and _ only");
  }
  if (value.expose().find('\0') != std::string_view::npos) {
    return invalid_argument("the value of " + std::string{key} + " holds a NUL byte");
  }
  if (Segment* seg = last_of(key)) {
    seg->value = std::move(value);
    seg->changed = true;
    return Ok{};
  }
  Segment seg;
  seg.is_entry = true;
  seg.key = std::string{key};
  seg.value = std::move(value);
  seg.changed = true;
  seg.appended = true;
  seg.has_newline = true;
  seg.begin = seg.end = seg.prefix_end = seg.suffix_begin = seg.suffix_end = source_.size();
  segments_.push_back(std::move(seg));
  return Ok{};
}

bool DotenvDocument::remove(std::string_view key) {
  const auto before = segments_.size();
  segments_.erase(std::remove_if(segments_.begin(), segments_.end(),
                                 [&](const Segment& s) { return s.is_entry && s.key == key; }),
                  segments_.end());
  return segments_.size() != before;
}

void DotenvDocument::blank_values() {
  for (auto& seg : segments_) {
    if (seg.is_entry) {
      seg.value = Secret{};
      seg.changed = true;
    }
  }
}

DotenvFile DotenvDocument::entries() const {
  DotenvFile file;
  file.warnings = warnings_;
  std::map<std::string, std::size_t, std::less<>> index;
  for (const auto& seg : segments_) {
    if (!seg.is_entry) continue;
    const auto it = index.find(seg.key);
    if (it == index.end()) {
      index.emplace(seg.key, file.entries.size());
      file.entries.push_back({seg.key, seg.value.clone(), seg.line});
    } else {
      file.entries[it->second].value = seg.value.clone();
      file.entries[it->second].line = seg.line;
    }
  }
  return file;
}

Secret DotenvDocument::render() const {
  const std::string_view src = source_.expose();
  // Each changed value quoted once, then the sizes are known and the output buffer never grows.
  std::vector<Secret> quoted(segments_.size());
  std::size_t size = 0;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const Segment& seg = segments_[i];
    if (seg.changed) {
      quoted[i] = quote_dotenv_value(seg.value.expose());
      size += (seg.prefix_end - seg.begin) + seg.key.size() + 1 + quoted[i].size() +
              (seg.suffix_end - seg.suffix_begin) + 4;
    } else {
      size += seg.end - seg.begin;
    }
  }
  ValueBuffer out{size + 1};
  bool ends_open = false;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const Segment& seg = segments_[i];
    if (!seg.changed) {
      out.append(src.substr(seg.begin, seg.end - seg.begin));
      ends_open = !seg.has_newline;
      continue;
    }
    if (ends_open) out.push('\n');
    out.append(src.substr(seg.begin, seg.prefix_end - seg.begin));
    out.append(seg.key);
    out.push('=');
    out.append(quoted[i].expose());
    const auto suffix = src.substr(seg.suffix_begin, seg.suffix_end - seg.suffix_begin);
    // After a quote a comment may follow anything (`"x"#c`, `"x"\r#c`); after a bare value its
    // '#' needs a blank right before it.
    const auto hash = suffix.find('#');
    if (hash != std::string_view::npos && (hash == 0 || !is_blank(suffix[hash - 1]))) {
      out.append(suffix.substr(0, hash));
      out.push(' ');
      out.append(suffix.substr(hash));
    } else {
      out.append(suffix);
    }
    if (seg.has_newline) {
      // A CRLF file keeps its line ending.
      const auto nl = src.substr(seg.suffix_end, seg.end - seg.suffix_end);
      if (!seg.appended && nl.size() >= 2 && nl[nl.size() - 2] == '\r') out.push('\r');
      out.push('\n');
    }
    ends_open = !seg.has_newline;
  }
  return out.take();
}

Secret quote_dotenv_value(std::string_view value) {
  if (std::all_of(value.begin(), value.end(), bare_safe)) return Secret::from(value);
  const bool single =
      value.find('\'') == std::string_view::npos && value.find('\r') == std::string_view::npos;
  if (single) {
    ValueBuffer out{value.size() + 2};
    out.push('\'');
    out.append(value);
    out.push('\'');
    return out.take();
  }
  ValueBuffer out{value.size() * 2 + 2};
  out.push('"');
  for (const char c : value) {
    switch (c) {
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '$':
        out.append("\\$");
        break;
      default:
        out.push(c);
    }
  }
  out.push('"');
  return out.take();
}

Result<DotenvFile> parse_dotenv(std::string_view text, std::string_view file_name) {
  auto doc = DotenvDocument::parse(text, file_name);
  if (!doc) return doc.error();
  return doc.value().entries();
}

}  // namespace orgd::secrets
