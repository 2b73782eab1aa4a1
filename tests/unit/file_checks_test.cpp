// The files a config names (NATS credentials, TLS) are checked before orgd uses them.
#include "daemon/core/file_checks.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tests/support/temp_dir.hpp"

namespace orgd {
namespace {

using testing::TempDir;

TEST(FileChecks, NatsFilesListsOnlyTheKeysThatAreSet) {
  NatsConfig nats;
  EXPECT_TRUE(nats_files(nats).empty());
  nats.creds_file = "/etc/orgd/user.creds";
  nats.tls.ca_file = "/etc/orgd/ca.pem";
  const auto files = nats_files(nats);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].key, "nats.creds_file");
  EXPECT_EQ(files[0].path, "/etc/orgd/user.creds");
  EXPECT_EQ(files[1].key, "nats.tls.ca_file");
}

TEST(FileChecks, MissingWrongKindAndUnreadableFilesAreNamedWithTheirKey) {
  TempDir dir("orgd-file-checks");
  testing::write_file(dir / "user.creds", "-----BEGIN NATS USER JWT-----\n");
  testing::write_file(dir / "secret.nk", "SU...\n");
  std::filesystem::permissions(dir / "secret.nk", std::filesystem::perms::none);
  std::filesystem::create_directories(dir / "certs");
  const std::vector<NamedFile> files = {
      {"nats.creds_file", (dir / "user.creds").string(), false},
      {"nats.tls.ca_file", (dir / "absent.pem").string(), false},
      {"nats.tls.cert_file", (dir / "certs").string(), false},
      {"nats.nkey_file", (dir / "secret.nk").string(), false},
      {"repos.api.deploy.dev.workdir", (dir / "certs").string(), true},
      {"repos.web.deploy.dev.workdir", (dir / "user.creds").string(), true},
  };
  const auto problems = unreadable_files(files);
  auto has = [&](const std::string& text) {
    for (const auto& p : problems) {
      if (p.find(text) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_FALSE(has("nats.creds_file")) << "a readable file is fine";
  EXPECT_TRUE(has("nats.tls.ca_file: " + (dir / "absent.pem").string() + ": "));
  EXPECT_TRUE(has("nats.tls.cert_file: " + (dir / "certs").string() + ": is a directory"));
  EXPECT_FALSE(has("repos.api.deploy.dev.workdir")) << "a directory where one is wanted";
  EXPECT_TRUE(has("repos.web.deploy.dev.workdir: " + (dir / "user.creds").string() +
                  ": is not a directory"));
  // Root reads any file whatever its mode: only an ordinary user sees the refusal.
  if (::geteuid() != 0) {
    EXPECT_TRUE(has("nats.nkey_file: " + (dir / "secret.nk").string() + ": Permission denied"));
  }
  for (const auto& p : problems) EXPECT_EQ(p.find("BEGIN NATS"), std::string::npos) << p;
  std::filesystem::permissions(dir / "secret.nk", std::filesystem::perms::owner_all);
}

}  // namespace
}  // namespace orgd
