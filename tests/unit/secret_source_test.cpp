// Credentials from the environment and from files, straight into Secrets, with errors that name
// where they were looked for and never what they hold.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "daemon/core/secret_source.hpp"
#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

constexpr const char* kCanary = "CANARY-source-51c0de";
using Vars = std::map<std::string, std::string>;

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(SecretSourceTest, ReadsAVariable) {
  const SecretSource source(Environment({{"ORGD_TEST_TOKEN", kCanary}, {"EMPTY", ""}}));
  auto token = source.from_env("ORGD_TEST_TOKEN");
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token.value().expose(), kCanary);
  for (const char* missing : {"ABSENT", "EMPTY"}) {
    auto value = source.from_env(missing);
    ASSERT_FALSE(value);
    EXPECT_EQ(value.error().code, ErrorCode::not_found);
    EXPECT_EQ(value.error().message,
              std::string("environment variable ") + missing + " is not set");
  }
}

TEST(SecretSourceTest, ReadsAFileWithoutItsTrailingNewline) {
  testing::TempDir dir;
  const SecretSource source{Environment{}};
  write(dir / "echoed", std::string(kCanary) + "\n");
  write(dir / "crlf", std::string(kCanary) + "\r\n");
  write(dir / "exact", kCanary);
  write(dir / "pem", "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n\n");
  for (const char* name : {"echoed", "crlf", "exact"}) {
    auto value = source.from_file(dir / name);
    ASSERT_TRUE(value) << name << ": " << value.error().message;
    EXPECT_EQ(value.value().expose(), kCanary) << name;
  }
  // Only one newline goes: a PEM keeps its own line ends.
  EXPECT_EQ(source.from_file(dir / "pem").value().expose(),
            "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n");
}

// Containers mount secrets as files: ORGD_TEST_TOKEN_FILE names the file when the variable
// itself is unset; both at once is refused (which one would win is not obvious to the operator).
TEST(SecretSourceTest, ReadsTheFileAVariableFileNames) {
  testing::TempDir dir;
  write(dir / "token", std::string(kCanary) + "\n");
  const std::string file = (dir / "token").string();

  const SecretSource from_file(Environment(Vars{{"ORGD_TEST_TOKEN_FILE", file}}));
  auto token = from_file.from_env("ORGD_TEST_TOKEN");
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token.value().expose(), kCanary);

  const SecretSource both(
      Environment({{"ORGD_TEST_TOKEN", kCanary}, {"ORGD_TEST_TOKEN_FILE", file}}));
  auto refused = both.from_env("ORGD_TEST_TOKEN");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(refused.error().message.find("ORGD_TEST_TOKEN_FILE"), std::string::npos);
  EXPECT_EQ(refused.error().message.find(kCanary), std::string::npos);

  const SecretSource missing(
      Environment(Vars{{"ORGD_TEST_TOKEN_FILE", (dir / "absent").string()}}));
  auto absent = missing.from_env("ORGD_TEST_TOKEN");
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, ErrorCode::not_found);
  EXPECT_NE(absent.error().message.find("ORGD_TEST_TOKEN_FILE: secret file"), std::string::npos)
      << absent.error().message;
}

TEST(SecretSourceTest, FileErrorsNameThePathNotTheContents) {
  testing::TempDir dir;
  const SecretSource source{Environment{}};
  auto missing = source.from_file(dir / "absent");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_NE(missing.error().message.find("absent"), std::string::npos);

  auto directory = source.from_file(dir.path());
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().code, ErrorCode::invalid_argument);

  write(dir / "huge", std::string(SecretSource::kMaxFileBytes + 1, 'x') + kCanary);
  auto huge = source.from_file(dir / "huge");
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(huge.error().message.find("at most 65536"), std::string::npos) << huge.error().message;
  EXPECT_EQ(huge.error().message.find(kCanary), std::string::npos);
}

}  // namespace
}  // namespace orgd
