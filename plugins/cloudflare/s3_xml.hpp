#pragma once

// The little XML R2's S3 API answers with (ListObjectsV2's ListBucketResult, the <Error>
// document), read without an XML library: the elements of one name and their text, entities
// (&amp; &lt; &gt; &quot; &apos;, &#N; &#xH;) and CDATA sections decoded. The schemas read here
// nest no element inside one of the same name, which is what makes this enough.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace orgd::cloudflare::s3xml {

// Text with its entities and CDATA sections decoded; nullopt for a malformed entity (an '&'
// without ';', an unknown name, a character reference out of range).
std::optional<std::string> decode(std::string_view text);

// The raw contents (between the start and end tags, not decoded) of every <tag …>…</tag> and
// <tag/> in `xml`, in order; nested elements of other names are inside the contents.
std::vector<std::string_view> elements(std::string_view xml, std::string_view tag);

// The decoded text of the first <tag> in `xml`; nullopt when there is none or it does not
// decode.
std::optional<std::string> text(std::string_view xml, std::string_view tag);

}  // namespace orgd::cloudflare::s3xml
