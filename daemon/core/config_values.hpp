#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

// Checks and parsers for the values a config holds (names, URLs, host:port, sizes, ...), and how
// a value from the file is shown in a message. Shared by the section loaders and the environment
// overrides, so a value reads the same whichever way it came in.
namespace orgd {

// A fixed list of allowed words (keys, choices, schemes).
using Words = std::span<const std::string_view>;

bool contains(Words words, std::string_view word);
// "a, b, c", for messages.
std::string join(Words words);

// Text from the file, made safe for a one-line message: control characters escaped, long text
// cut short.
std::string printable(std::string_view text, std::size_t max = 64);
// printable() in double quotes.
std::string quoted(std::string_view text);

// The value as it may appear in a message about `path`: keys whose values may be secret (token,
// password, seed, secret, key; not *_env or *_file) are never echoed back.
std::string shown(std::string_view path, std::string_view value);

std::string_view trim(std::string_view text);

// Names of repos, providers, environments, services and secrets end up as NATS subject tokens
// and KV keys: [A-Za-z0-9_-]+, at most 100 characters.
bool valid_name(std::string_view name);

// The org: lower-case letters, digits and '-', not starting with '-', at most kMaxOrgLength.
inline constexpr std::size_t kMaxOrgLength = 63;
bool valid_org(std::string_view org);

// A subject of literal tokens: no wildcards, no empty tokens, no spaces or control characters.
std::optional<std::string> subject_problem(std::string_view subject);

// A NATS server URL (nats, tls, ws, wss, or host:port without a scheme).
std::optional<std::string> url_problem(std::string_view url);
// A URL as it may be logged: user information ("user:password@") is replaced by "***@".
std::string redact_url(std::string_view url);
// URLs as they may be logged, comma-separated, each redacted.
std::string redact_urls(const std::vector<std::string>& urls);
// "a, b" -> {"a", "b"}, each trimmed (empty parts kept, so url_problem reports them).
std::vector<std::string> split_urls(std::string_view text);

// "host:port" or "[v6]:port"; on success fills host (without brackets) and port.
std::optional<std::string> listen_problem(std::string_view text, std::string& host,
                                          std::uint16_t& port);

// true/yes/on, false/no/off, in any case.
std::optional<bool> parse_bool(std::string_view text);
std::optional<std::int64_t> parse_int(std::string_view text);
// An integer number of bytes, optionally with a binary unit: 1048576, 512KiB, 1MiB (K/KB/M/MB/G/GB
// are read as binary units too, as nats-server does).
std::optional<std::int64_t> parse_bytes(std::string_view text);
// "1 MiB", "512 KiB", "1000 bytes".
std::string bytes_text(std::int64_t bytes);

}  // namespace orgd
