#pragma once

// The checks behind `orgctl secrets init` and `orgctl secrets security` (what users of the old
// secret-sync.sh know as `init` and `security`), on the local files of a repo checkout. They
// never print a value: findings carry names, files, lines, commits and a token's first 4
// characters.

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/environment.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/secrets/dotenv.hpp"

namespace orgd::cli {

// --- init ---------------------------------------------------------------------------------------

struct EnvExampleWritten {
  std::string path;                              // the .env.example written
  std::size_t names = 0;                         // distinct names in it
  std::vector<secrets::DotenvWarning> warnings;  // of the .env (duplicate names)
};

// Writes `.env.example` next to `env_path`: the .env's lines with every value emptied
// (`KEY=`), comments, blank lines, `export ` and order kept; replaces an older example. Refused
// (nothing written) when the .env does not parse, or when a comment kept for the example holds
// something that looks like a token (a commented-out old value): the example is meant to be
// committed. Written to a temporary file and renamed, mode 0644.
Result<EnvExampleWritten> write_env_example(const std::string& env_path);

// --- token patterns ---------------------------------------------------------------------------

// A token-shaped string in some text. `masked` is its first 4 characters and "…": enough to
// find it, not enough to use it.
struct TokenMatch {
  std::string kind;  // e.g. "github_classic_pat", "nats_user_seed", "private_key_pem"
  std::size_t offset = 0;
  std::size_t length = 0;
  std::string masked;
};

// The patterns looked for:
//   GitHub   ghp_ gho_ ghu_ ghs_ ghr_ + 30 or more [A-Za-z0-9_], github_pat_ + 22 or more;
//   Cloudflare  cfk_ cfut_ cfat_ + 40 or more [A-Za-z0-9] (the scannable formats), and a
//            40-character [A-Za-z0-9_-] value right after CLOUDFLARE_API_TOKEN (the older
//            unprefixed tokens, which alone look like any other string);
//   NATS     nkeys seeds: S + U (user), A (account), O (operator), N (server), C (cluster) or
//            X (curve) + 56 base32 characters, 58 in all;
//   PEM      -----BEGIN ... PRIVATE KEY----- headers.
// Each must start at a word boundary (not after a letter or digit).
std::vector<TokenMatch> find_tokens(std::string_view text);

std::string mask_token(std::string_view token);

// --- security ---------------------------------------------------------------------------------

struct SecurityFinding {
  // env_mode | env_not_ignored | env_tracked | not_a_git_repo | token_in_history |
  // history_incomplete
  std::string kind;
  std::string message;  // one line, names only
  std::string fix;      // the command or edit that mends it; "" when there is none to give
  // token_in_history: where it was added, and what it looks like.
  std::string commit;  // 12 hex digits
  std::string file;
  int line = 0;
  std::string pattern;  // TokenMatch::kind
  std::string masked;
};

struct SecurityOptions {
  std::string repo_dir = ".";
  std::string env_file = ".env";  // relative to repo_dir
  // `git log -p --all` output read at most: past it the scan stops and says it is incomplete.
  std::size_t max_history_bytes = std::size_t{512} << 20;
  // Where git comes from (PATH, HOME): only the allow-list reaches it.
  Environment environment = Environment::current();
};

struct SecurityReport {
  bool env_present = false;
  std::size_t commits_scanned = 0;
  std::vector<SecurityFinding> findings;
  // The exit code `orgctl secrets security` ends with: non-zero when something was found.
  int exit_code() const { return findings.empty() ? 0 : 1; }
};

// The .env's mode is 0600 (else the fix is `chmod 600`), it is git-ignored (`git check-ignore`)
// and not tracked, and no commit of any branch added a token (`git log -p --all`, read through a
// bounded pipe from a child process, only added lines looked at). An error only when git cannot
// be run at all.
Result<SecurityReport> check_security(const SecurityOptions& options);

// The report as `orgctl secrets security` prints it: one line per finding with its fix, then a
// summary line.
std::string render_security_report(const SecurityReport& report);

// The two subcommands end to end, for orgctl's main (they need no connection to orgd): output
// to `out`, problems to `err`; the exit code (0 ok, 1 something found or refused, 2 git could not
// run).
int run_secrets_init(const std::string& env_path, std::ostream& out, std::ostream& err);
int run_secrets_security(const SecurityOptions& options, std::ostream& out, std::ostream& err);

}  // namespace orgd::cli
