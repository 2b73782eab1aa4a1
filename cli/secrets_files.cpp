#include "cli/secrets_files.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ostream>

#include "daemon/core/subprocess.hpp"
#include "daemon/core/unique_fd.hpp"

namespace orgd::cli {
namespace {

namespace fs = std::filesystem;

bool is_alnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_base32(char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }

// How many characters from `at` satisfy `pred`.
template <class Pred>
std::size_t run_length(std::string_view text, std::size_t at, Pred pred) {
  std::size_t n = 0;
  while (at + n < text.size() && pred(text[at + n])) ++n;
  return n;
}

struct Prefix {
  std::string_view prefix;
  std::string_view kind;
  std::size_t min_body;
  bool underscore;  // the body may hold '_'
};

constexpr std::array<Prefix, 9> kPrefixes{{
    {"ghp_", "github_classic_pat", 30, true},
    {"gho_", "github_oauth_token", 30, true},
    {"ghu_", "github_user_to_server_token", 30, true},
    {"ghs_", "github_server_to_server_token", 30, true},
    {"ghr_", "github_refresh_token", 30, true},
    {"github_pat_", "github_fine_grained_pat", 22, true},
    {"cfk_", "cloudflare_global_api_key", 40, false},
    {"cfut_", "cloudflare_user_api_token", 40, false},
    {"cfat_", "cloudflare_account_api_token", 40, false},
}};

std::string_view nkey_seed_kind(char type) {
  switch (type) {
    case 'U':
      return "nats_user_seed";
    case 'A':
      return "nats_account_seed";
    case 'O':
      return "nats_operator_seed";
    case 'N':
      return "nats_server_seed";
    case 'C':
      return "nats_cluster_seed";
    case 'X':
      return "nats_curve_seed";
    default:
      return {};
  }
}

// A file read whole into Secret memory, refused past `max` bytes.
Result<Secret> read_bounded(const std::string& path, std::size_t max) {
  UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.get() < 0) return not_found("cannot read " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return invalid_argument(path + " is not a regular file");
  }
  if (static_cast<std::size_t>(st.st_size) > max) {
    return invalid_argument(path + ": larger than " + std::to_string(max) + " bytes");
  }
  std::string bytes(static_cast<std::size_t>(st.st_size) + 1, '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      sodium_memzero(bytes.data(), bytes.size());
      return unavailable("cannot read " + path + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > max) {
    sodium_memzero(bytes.data(), bytes.size());
    return invalid_argument(path + ": larger than " + std::to_string(max) + " bytes");
  }
  bytes.resize(got);
  return Secret::take(std::move(bytes));
}

struct GitRun {
  int status = 0;
  bool truncated = false;
};

// Runs git in `dir` with the allow-list environment, handing each output line (without its
// newline; lines cut at kMaxLine bytes) to `on_line`, reading at most `max_bytes`: then the child
// is killed and the run is marked truncated.
Result<GitRun> run_git(const std::string& dir, std::vector<std::string> args,
                       const Environment& environment, std::size_t max_bytes,
                       const std::function<void(std::string_view)>& on_line) {
  constexpr std::size_t kMaxLine = 1 << 20;
  SpawnOptions options;
  options.argv = {"git", "-C", dir, "-c", "core.quotepath=off"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env = child_environment(environment);
  options.capture_output = true;
  options.parent_death_signal = SIGKILL;
  SpawnedChild child;
  try {
    child = spawn_child(options);
  } catch (const SpawnError& e) {
    return unavailable(std::string{"cannot run git: "} + e.what());
  }
  GitRun run;
  std::string line;
  line.reserve(kMaxLine);  // never reallocated: no unwiped copy of a line left behind
  std::size_t total = 0;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(child.output.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
    for (ssize_t i = 0; i < n; ++i) {
      if (buffer[i] == '\n') {
        if (on_line) on_line(line);
        sodium_memzero(line.data(), line.size());
        line.clear();
      } else if (line.size() < kMaxLine) {
        line.push_back(buffer[i]);
      }
    }
    sodium_memzero(buffer, static_cast<std::size_t>(n));
    if (total > max_bytes) {
      run.truncated = true;
      ::kill(child.pid, SIGKILL);
      break;
    }
  }
  if (!line.empty() && on_line && !run.truncated) on_line(line);
  sodium_memzero(line.data(), line.size());
  const auto status = reap_child(child.pid, /*block=*/true);
  run.status = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  return run;
}

SecurityFinding finding(std::string kind, std::string message, std::string fix) {
  SecurityFinding f;
  f.kind = std::move(kind);
  f.message = std::move(message);
  f.fix = std::move(fix);
  return f;
}

// The new file's first line of a hunk header "@@ -a,b +c,d @@".
int hunk_start(std::string_view header) {
  const auto plus = header.find(" +");
  if (plus == std::string_view::npos) return 0;
  return std::atoi(std::string{header.substr(plus + 2, 12)}.c_str());
}

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%03o", static_cast<unsigned>(mode & 0777));
  return text;
}

}  // namespace

std::string mask_token(std::string_view token) { return std::string{token.substr(0, 4)} + "…"; }

std::vector<TokenMatch> find_tokens(std::string_view text) {
  std::vector<TokenMatch> found;
  auto add = [&](std::string_view kind, std::size_t at, std::size_t length) {
    found.push_back({std::string{kind}, at, length, mask_token(text.substr(at, length))});
  };
  std::size_t i = 0;
  while (i < text.size()) {
    const bool boundary = i == 0 || !is_alnum(text[i - 1]);
    std::size_t matched = 0;
    if (boundary) {
      for (const auto& p : kPrefixes) {
        if (text.substr(i, p.prefix.size()) != p.prefix) continue;
        const std::size_t body = run_length(text, i + p.prefix.size(), [&](char c) {
          return is_alnum(c) || (p.underscore && c == '_');
        });
        if (body >= p.min_body) {
          add(p.kind, i, p.prefix.size() + body);
          matched = p.prefix.size() + body;
        }
        break;
      }
      // nkeys seed: S, its type, then base32 to 58 characters in all, and no more.
      if (matched == 0 && text[i] == 'S' && i + 1 < text.size() &&
          !nkey_seed_kind(text[i + 1]).empty()) {
        const std::size_t body = run_length(text, i + 2, is_base32);
        const bool ends = i + 2 + body >= text.size() || !is_alnum(text[i + 2 + body]);
        if (body == 56 && ends) {
          add(nkey_seed_kind(text[i + 1]), i, 58);
          matched = 58;
        }
      }
      if (matched == 0 && text.substr(i, 11) == "-----BEGIN ") {
        const std::size_t label =
            run_length(text, i + 11, [](char c) { return (c >= 'A' && c <= 'Z') || c == ' '; });
        const std::string_view words = text.substr(i + 11, label);
        if (label <= 40 && words.size() >= 11 && words.substr(words.size() - 11) == "PRIVATE KEY" &&
            text.substr(i + 11 + label, 5) == "-----") {
          add("private_key_pem", i, 11 + label + 5);
          matched = 11 + label + 5;
        }
      }
      // An unprefixed Cloudflare token is only told from any other string by its name.
      constexpr std::string_view kCloudflareName = "CLOUDFLARE_API_TOKEN";
      if (matched == 0 && text.substr(i, kCloudflareName.size()) == kCloudflareName) {
        std::size_t at = i + kCloudflareName.size();
        const std::size_t gap = run_length(text, at, [](char c) {
          return c == ' ' || c == '\t' || c == '=' || c == ':' || c == '"' || c == '\'';
        });
        at += gap;
        const std::size_t body =
            run_length(text, at, [](char c) { return is_alnum(c) || c == '_' || c == '-'; });
        if (gap > 0 && body == 40) {
          add("cloudflare_api_token", at, 40);
          matched = at + 40 - i;
        }
      }
    }
    i += matched > 0 ? matched : 1;
  }
  return found;
}

Result<EnvExampleWritten> write_env_example(const std::string& env_path) {
  auto text = read_bounded(env_path, secrets::kMaxDotenvBytes);
  if (!text) return text.error();
  auto doc = secrets::DotenvDocument::parse(text.value().expose(), env_path);
  if (!doc) return doc.error();
  EnvExampleWritten written;
  written.warnings = doc.value().warnings();
  written.names = doc.value().keys().size();
  doc.value().blank_values();
  const Secret example = doc.value().render();
  // What is left are the names and the comments; a token in a comment must not be committed.
  const auto tokens = find_tokens(example.expose());
  if (!tokens.empty()) {
    const auto before = example.expose().substr(0, tokens.front().offset);
    const int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    return invalid_argument(env_path + ":" + std::to_string(line) +
                            ": a comment holds what looks like a " + tokens.front().kind + " (" +
                            tokens.front().masked +
                            "): remove it from the .env before writing the example");
  }
  const fs::path target = fs::path{env_path}.parent_path() / ".env.example";
  written.path = target.string();
  const std::string temp = written.path + ".tmp";
  {
    UniqueFd fd{::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (fd.get() < 0) return unavailable("cannot write " + temp + ": " + std::strerror(errno));
    const std::string_view bytes = example.expose();
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::unlink(temp.c_str());
        return unavailable("cannot write " + temp + ": " + std::strerror(err));
      }
      done += static_cast<std::size_t>(n);
    }
    ::fchmod(fd.get(), 0644);
  }
  if (::rename(temp.c_str(), written.path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return unavailable("cannot replace " + written.path + ": " + std::strerror(err));
  }
  return written;
}

Result<SecurityReport> check_security(const SecurityOptions& options) {
  SecurityReport report;
  const std::string env_path = (fs::path{options.repo_dir} / options.env_file).string();
  struct stat st {};
  if (::stat(env_path.c_str(), &st) == 0) {
    report.env_present = true;
    if ((st.st_mode & 0077) != 0) {
      report.findings.push_back(finding("env_mode",
                                        options.env_file + " is mode " + octal_mode(st.st_mode) +
                                            ": others than its owner can read it",
                                        "chmod 600 " + env_path));
    }
  }

  auto inside = run_git(options.repo_dir, {"rev-parse", "--is-inside-work-tree"},
                        options.environment, 4096, nullptr);
  if (!inside) return inside.error();
  if (inside.value().status != 0) {
    report.findings.push_back(finding("not_a_git_repo",
                                      options.repo_dir +
                                          " is not a git work tree: .gitignore and the "
                                          "history were not checked",
                                      ""));
    return report;
  }

  auto ignored = run_git(options.repo_dir, {"check-ignore", "-q", "--no-index", options.env_file},
                         options.environment, 4096, nullptr);
  if (!ignored) return ignored.error();
  if (ignored.value().status == 1) {
    report.findings.push_back(finding("env_not_ignored",
                                      options.env_file + " is not covered by .gitignore",
                                      "echo '" + options.env_file + "' >> " +
                                          (fs::path{options.repo_dir} / ".gitignore").string()));
  }
  auto tracked = run_git(options.repo_dir, {"ls-files", "--error-unmatch", "--", options.env_file},
                         options.environment, 1 << 16, nullptr);
  if (!tracked) return tracked.error();
  if (tracked.value().status == 0) {
    report.findings.push_back(
        finding("env_tracked", options.env_file + " is tracked by git: its values are committed",
                "git rm --cached " + options.env_file + ", then rotate every value it held"));
  }

  // Added lines of every commit of every branch, with their file and line.
  constexpr std::size_t kMaxFindings = 1000;
  std::string commit, file;
  int next_line = 0;
  bool in_header = false;
  std::size_t dropped = 0;
  auto on_line = [&](std::string_view line) {
    if (line.substr(0, 7) == "commit " && line.size() >= 47) {
      commit = std::string{line.substr(7, 12)};
      ++report.commits_scanned;
      in_header = false;
      return;
    }
    if (line.substr(0, 11) == "diff --git ") {
      in_header = true;
      file.clear();
      return;
    }
    if (in_header) {
      if (line.substr(0, 6) == "+++ b/") {
        file = std::string{line.substr(6)};
      } else if (line.substr(0, 3) == "@@ ") {
        in_header = false;
        next_line = hunk_start(line);
      }
      return;
    }
    if (line.substr(0, 3) == "@@ ") {
      next_line = hunk_start(line);
      return;
    }
    if (line.empty()) return;
    if (line[0] == '+') {
      for (auto& match : find_tokens(line.substr(1))) {
        if (report.findings.size() >= kMaxFindings) {
          ++dropped;
          continue;
        }
        SecurityFinding f;
        f.kind = "token_in_history";
        f.commit = commit;
        f.file = file;
        f.line = next_line;
        f.pattern = match.kind;
        f.masked = match.masked;
        f.message = "commit " + commit + " added a " + match.kind + " (" + match.masked + ") at " +
                    file + ":" + std::to_string(next_line);
        f.fix = "revoke and rotate it; removing it from the history does not make it safe";
        report.findings.push_back(std::move(f));
      }
      ++next_line;
    } else if (line[0] == ' ') {
      ++next_line;
    }
  };
  auto history = run_git(options.repo_dir,
                         {"log", "-p", "--all", "--no-color", "--no-ext-diff", "--no-textconv",
                          "--unified=0", "--format=commit %H"},
                         options.environment, options.max_history_bytes, on_line);
  if (!history) return history.error();
  if (history.value().truncated) {
    report.findings.push_back(
        finding("history_incomplete",
                "the history scan stopped after " + std::to_string(options.max_history_bytes) +
                    " bytes of `git log -p --all`: later commits were not checked",
                ""));
  } else if (history.value().status != 0 && report.commits_scanned > 0) {
    report.findings.push_back(
        finding("history_incomplete",
                "git log ended with exit code " + std::to_string(history.value().status), ""));
  }
  if (dropped > 0) {
    report.findings.push_back(
        finding("history_incomplete",
                std::to_string(dropped) + " more tokens in the history not listed", ""));
  }
  return report;
}

std::string render_security_report(const SecurityReport& report) {
  std::string out;
  for (const auto& f : report.findings) {
    out += "✗ " + f.message + "\n";
    if (!f.fix.empty()) out += "    fix: " + f.fix + "\n";
  }
  if (report.findings.empty()) {
    out += "✓ no problems found (" + std::to_string(report.commits_scanned) + " commits scanned" +
           (report.env_present ? "" : "; no .env") + ")\n";
  } else {
    out += std::to_string(report.findings.size()) + " problem" +
           (report.findings.size() == 1 ? "" : "s") + " found (" +
           std::to_string(report.commits_scanned) + " commits scanned)\n";
  }
  return out;
}

int run_secrets_init(const std::string& env_path, std::ostream& out, std::ostream& err) {
  auto written = write_env_example(env_path);
  if (!written) {
    err << "orgctl secrets init: " << written.error().message << "\n";
    return 1;
  }
  for (const auto& w : written.value().warnings) err << "warning: " << w.message << "\n";
  out << "wrote " << written.value().path << " (" << written.value().names << " name"
      << (written.value().names == 1 ? "" : "s") << ", no values)\n";
  return 0;
}

int run_secrets_security(const SecurityOptions& options, std::ostream& out, std::ostream& err) {
  auto report = check_security(options);
  if (!report) {
    err << "orgctl secrets security: " << report.error().message << "\n";
    return 2;
  }
  out << render_security_report(report.value());
  return report.value().exit_code();
}

}  // namespace orgd::cli
