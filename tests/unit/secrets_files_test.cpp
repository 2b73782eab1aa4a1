// `orgctl secrets init` and `orgctl secrets security` on real files and a real git repository
// (git is installed): the example keeps names and comments but no value; the security check
// finds a loose mode, a .env that is not ignored, and a token committed to the history, masked.
#include "cli/secrets_files.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/support/temp_dir.hpp"

namespace orgd::cli {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Fake tokens of the right shapes, built at run time so this file itself holds none.
std::string fake(std::string_view prefix, std::size_t n, char c = 'a') {
  return std::string{prefix} + std::string(n, c);
}
const std::string kGithubToken = fake("ghp_", 36, 'Z');
const std::string kNatsSeed = "SU" + std::string(56, 'A');

void sh(const std::string& command) { ASSERT_EQ(std::system(command.c_str()), 0) << command; }

// A repository with one commit; git's identity given on the command line, nothing global used.
void git_repo(const fs::path& dir) { sh("git -C " + dir.string() + " init -q -b main"); }
void commit_all(const fs::path& dir, const std::string& message) {
  sh("git -C " + dir.string() + " add -A && git -C " + dir.string() +
     " -c user.name=t -c user.email=t@example.com commit -q -m '" + message + "'");
}

TEST(SecretsInit, WritesTheNamesWithCommentsAndNoValue) {
  TempDir dir;
  testing::write_file(
      dir / ".env",
      "# GitHub\nexport GITHUB_TOKEN=canary-1 # the bot's\n\n"
      "DB_URL=\"postgres://canary-2\"\nKEY='multi\ncanary-3'\nGITHUB_TOKEN=canary-4\n");
  auto written = write_env_example((dir / ".env").string());
  ASSERT_TRUE(written.ok()) << written.error().message;
  EXPECT_EQ(written.value().path, (dir / ".env.example").string());
  EXPECT_EQ(written.value().names, 3u);
  EXPECT_EQ(written.value().warnings.size(), 1u);  // GITHUB_TOKEN twice
  EXPECT_EQ(testing::read_file(dir / ".env.example"),
            "# GitHub\nexport GITHUB_TOKEN= # the bot's\n\nDB_URL=\nKEY=\nGITHUB_TOKEN=\n");
  struct stat st {};
  ASSERT_EQ(::stat((dir / ".env.example").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(SecretsInit, RefusesAnExampleWhoseCommentsHoldAToken) {
  TempDir dir;
  testing::write_file(dir / ".env", "A=1\n# old: " + kGithubToken + "\n");
  auto written = write_env_example((dir / ".env").string());
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().message,
            (dir / ".env").string() +
                ":2: a comment holds what looks like a github_classic_pat (ghp_…): remove it from "
                "the .env before writing the example");
  EXPECT_FALSE(fs::exists(dir / ".env.example"));
}

TEST(SecretsInit, RefusesAnEnvThatDoesNotParse) {
  TempDir dir;
  testing::write_file(dir / ".env", "A=\"canary\n");
  auto written = write_env_example((dir / ".env").string());
  ASSERT_FALSE(written.ok());
  EXPECT_NE(written.error().message.find(":1: unterminated"), std::string::npos);
  EXPECT_EQ(written.error().message.find("canary"), std::string::npos);
  EXPECT_FALSE(write_env_example((dir / "missing").string()).ok());
}

TEST(TokenPatterns, FindsEachKindMaskedAndAtWordBoundaries) {
  const std::string text =
      "a=" + kGithubToken + " b=" + fake("github_pat_", 30) + " c=" + fake("ghs_", 36) +
      " d=" + fake("gho_", 36) + " e=" + fake("ghu_", 36) + " f=" + fake("ghr_", 36) +
      " g=" + fake("cfut_", 42) + " h=" + fake("cfat_", 42) + " i=" + fake("cfk_", 42) +
      " j=" + kNatsSeed + " k=SA" + std::string(56, 'B') + " l=SO" + std::string(56, '2') +
      " m=SN" + std::string(56, '7') +
      " n=-----BEGIN OPENSSH PRIVATE KEY----- o=CLOUDFLARE_API_TOKEN=" + std::string(40, 'x');
  const auto found = find_tokens(text);
  std::vector<std::string> kinds;
  for (const auto& m : found) {
    kinds.push_back(m.kind);
    EXPECT_EQ(m.masked, text.substr(m.offset, 4) + "…");
  }
  EXPECT_EQ(
      kinds,
      (std::vector<std::string>{
          "github_classic_pat", "github_fine_grained_pat", "github_server_to_server_token",
          "github_oauth_token", "github_user_to_server_token", "github_refresh_token",
          "cloudflare_user_api_token", "cloudflare_account_api_token", "cloudflare_global_api_key",
          "nats_user_seed", "nats_account_seed", "nats_operator_seed", "nats_server_seed",
          "private_key_pem", "cloudflare_api_token"}));
  EXPECT_EQ(found[0].masked, "ghp_…");
  EXPECT_EQ(found[0].length, kGithubToken.size());
  EXPECT_EQ(found.back().masked, "xxxx…");

  // Too short, not at a boundary, wrong alphabet, a public key header.
  EXPECT_TRUE(find_tokens("ghp_short xghp_" + std::string(36, 'a') + " SU" + std::string(55, 'A') +
                          " SU" + std::string(57, 'A') + " SU" + std::string(56, '1') +
                          " -----BEGIN PUBLIC KEY----- CLOUDFLARE_API_TOKEN=" +
                          std::string(39, 'x') + " UA" + std::string(56, 'A'))
                  .empty());
}

TEST(SecretsSecurity, AClean600IgnoredRepoHasNoFindings) {
  TempDir dir;
  git_repo(dir.path());
  testing::write_file(dir / ".gitignore", ".env\n");
  testing::write_file(dir / "README", "hello\n");
  commit_all(dir.path(), "first");
  testing::write_file(dir / ".env", "A=" + kGithubToken + "\n");
  ASSERT_EQ(::chmod((dir / ".env").c_str(), 0600), 0);
  SecurityOptions options;
  options.repo_dir = dir.str();
  auto report = check_security(options);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_TRUE(report.value().findings.empty()) << render_security_report(report.value());
  EXPECT_TRUE(report.value().env_present);
  EXPECT_EQ(report.value().commits_scanned, 1u);
  EXPECT_EQ(report.value().exit_code(), 0);
  EXPECT_EQ(render_security_report(report.value()), "✓ no problems found (1 commits scanned)\n");
}

TEST(SecretsSecurity, FindsModeIgnoreAndACommittedTokenMasked) {
  TempDir dir;
  git_repo(dir.path());
  testing::write_file(dir / "README", "hello\n");
  commit_all(dir.path(), "first");
  testing::write_file(dir / "deploy" / "config.sh", "#!/bin/sh\n\nexport TOKEN=" + kGithubToken +
                                                        "\nexport SEED=" + kNatsSeed + "\n");
  commit_all(dir.path(), "add config");
  // Removed again: the history still has it.
  fs::remove(dir / "deploy" / "config.sh");
  commit_all(dir.path(), "remove config");
  testing::write_file(dir / ".env", "A=1\n");
  ASSERT_EQ(::chmod((dir / ".env").c_str(), 0644), 0);

  SecurityOptions options;
  options.repo_dir = dir.str();
  auto report = check_security(options);
  ASSERT_TRUE(report.ok()) << report.error().message;
  const auto& findings = report.value().findings;
  ASSERT_EQ(findings.size(), 4u) << render_security_report(report.value());
  EXPECT_EQ(findings[0].kind, "env_mode");
  EXPECT_EQ(findings[0].message, ".env is mode 644: others than its owner can read it");
  EXPECT_EQ(findings[0].fix, "chmod 600 " + (dir / ".env").string());
  EXPECT_EQ(findings[1].kind, "env_not_ignored");
  EXPECT_EQ(findings[2].kind, "token_in_history");
  EXPECT_EQ(findings[2].file, "deploy/config.sh");
  EXPECT_EQ(findings[2].line, 3);
  EXPECT_EQ(findings[2].pattern, "github_classic_pat");
  EXPECT_EQ(findings[2].masked, "ghp_…");
  EXPECT_EQ(findings[2].commit.size(), 12u);
  EXPECT_EQ(findings[3].line, 4);
  EXPECT_EQ(findings[3].pattern, "nats_user_seed");
  EXPECT_EQ(findings[3].masked, "SUAA…");
  EXPECT_EQ(report.value().exit_code(), 1);
  EXPECT_EQ(report.value().commits_scanned, 3u);

  const std::string printed = render_security_report(report.value());
  EXPECT_EQ(printed.find(kGithubToken.substr(0, 8)), std::string::npos) << printed;
  EXPECT_EQ(printed.find(kNatsSeed.substr(0, 8)), std::string::npos) << printed;
  EXPECT_NE(printed.find("added a github_classic_pat (ghp_…) at deploy/config.sh:3"),
            std::string::npos)
      << printed;
}

TEST(SecretsSecurity, ATrackedEnvIsReportedAndTheHistoryBoundHolds) {
  TempDir dir;
  git_repo(dir.path());
  testing::write_file(dir / ".env", "A=1\n");
  ASSERT_EQ(::chmod((dir / ".env").c_str(), 0600), 0);
  commit_all(dir.path(), "oops");
  testing::write_file(dir / ".gitignore", ".env\n");
  commit_all(dir.path(), "ignore");
  SecurityOptions options;
  options.repo_dir = dir.str();
  options.max_history_bytes = 16;
  auto report = check_security(options);
  ASSERT_TRUE(report.ok());
  std::vector<std::string> kinds;
  for (const auto& f : report.value().findings) kinds.push_back(f.kind);
  EXPECT_EQ(kinds, (std::vector<std::string>{"env_tracked", "history_incomplete"}));
}

TEST(SecretsSecurity, OutsideAGitRepository) {
  TempDir dir;
  SecurityOptions options;
  options.repo_dir = dir.str();
  auto report = check_security(options);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report.value().findings.size(), 1u);
  EXPECT_EQ(report.value().findings[0].kind, "not_a_git_repo");
  EXPECT_FALSE(report.value().env_present);
}

}  // namespace
}  // namespace orgd::cli
