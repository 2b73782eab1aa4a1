#include "plugins/cloudflare/s3_xml.hpp"

#include <cctype>
#include <cstdint>

namespace orgd::cloudflare::s3xml {

namespace {

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool decode_entity(std::string_view name, std::string& out) {
  if (name == "amp") return out.push_back('&'), true;
  if (name == "lt") return out.push_back('<'), true;
  if (name == "gt") return out.push_back('>'), true;
  if (name == "quot") return out.push_back('"'), true;
  if (name == "apos") return out.push_back('\''), true;
  if (name.size() < 2 || name[0] != '#') return false;
  const bool hex = name[1] == 'x' || name[1] == 'X';
  const std::string_view digits = name.substr(hex ? 2 : 1);
  if (digits.empty() || digits.size() > 8) return false;
  std::uint32_t cp = 0;
  for (const unsigned char c : digits) {
    if (hex ? !std::isxdigit(c) : !std::isdigit(c)) return false;
    const std::uint32_t d = std::isdigit(c) ? c - '0' : (std::tolower(c) - 'a' + 10);
    cp = cp * (hex ? 16 : 10) + d;
    if (cp > 0x10FFFF) return false;
  }
  if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  append_utf8(out, cp);
  return true;
}

// Whether `xml` at `at` is the start of a tag named `tag` (followed by '>', '/', or space).
bool tag_at(std::string_view xml, std::size_t at, std::string_view tag) {
  if (xml.compare(at, tag.size(), tag) != 0) return false;
  const std::size_t after = at + tag.size();
  if (after >= xml.size()) return false;
  const char c = xml[after];
  return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

}  // namespace

std::optional<std::string> decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, 9, "<![CDATA[") == 0) {
      const auto end = text.find("]]>", i + 9);
      if (end == std::string_view::npos) return std::nullopt;
      out.append(text.substr(i + 9, end - i - 9));
      i = end + 3;
      continue;
    }
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    const auto semi = text.find(';', i);
    if (semi == std::string_view::npos || semi - i > 12) return std::nullopt;
    if (!decode_entity(text.substr(i + 1, semi - i - 1), out)) return std::nullopt;
    i = semi + 1;
  }
  return out;
}

std::vector<std::string_view> elements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> out;
  const std::string close = "</" + std::string{tag} + ">";
  std::size_t at = 0;
  while ((at = xml.find('<', at)) != std::string_view::npos) {
    if (!tag_at(xml, at + 1, tag)) {
      // A CDATA section may hold '<': skip it whole.
      if (xml.compare(at, 9, "<![CDATA[") == 0) {
        const auto end = xml.find("]]>", at);
        if (end == std::string_view::npos) break;
        at = end + 3;
      } else {
        ++at;
      }
      continue;
    }
    const auto gt = xml.find('>', at);
    if (gt == std::string_view::npos) break;
    if (xml[gt - 1] == '/') {  // <tag/>
      out.emplace_back();
      at = gt + 1;
      continue;
    }
    const auto end = xml.find(close, gt + 1);
    if (end == std::string_view::npos) break;
    out.push_back(xml.substr(gt + 1, end - gt - 1));
    at = end + close.size();
  }
  return out;
}

std::optional<std::string> text(std::string_view xml, std::string_view tag) {
  const auto found = elements(xml, tag);
  if (found.empty()) return std::nullopt;
  return decode(found.front());
}

}  // namespace orgd::cloudflare::s3xml
