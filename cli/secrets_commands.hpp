#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/client.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/secret.hpp"

namespace orgd::cli {

// `orgctl secrets …`: the vault over P.api.secrets.* (import, set, list, sync, diff, rotate,
// backup, restore, test) and the checks of a checkout that need no orgd (init, security), the
// names users of the old secret-sync.sh know. Values never go on the command line (they would
// show in `ps` and shell history): `set` reads stdin or a file, passphrases come from an env var
// or the terminal; every value is sealed to the vault's public key before it leaves orgctl.
class SecretsCommands {
 public:
  void add_to(CLI::App& app);
  bool parsed() const;
  // init and security run without orgd (no NATS connection).
  bool local_only() const;
  ExitCode run_local();
  ExitCode run(Client& client, bool json);

 private:
  ExitCode run_import(Client& client, bool json);
  ExitCode run_set(Client& client, bool json);
  ExitCode run_list(Client& client, bool json);
  ExitCode run_sync(Client& client, bool json, bool diff_only);
  ExitCode run_rotate(Client& client, bool json);
  ExitCode run_backup(Client& client, bool json);
  ExitCode run_restore(Client& client, bool json);
  ExitCode run_backups(Client& client, bool json);
  ExitCode run_test(Client& client, bool json);

  // The vault's public key (P.api.secrets.key); prints the problem and returns nullopt when it
  // cannot be had.
  std::optional<std::string> vault_key(Client& client);
  // The passphrase of a backup: from --passphrase-env, else nothing (the master key is used).
  Result<Secret> passphrase() const;
  // The passphrase sealed to the vault's key into `sealed` (left empty without
  // --passphrase-env); prints the problem otherwise.
  ExitCode seal_passphrase(Client& client, const std::string& what, std::string& sealed);

  CLI::App* secrets_ = nullptr;
  CLI::App* import_ = nullptr;
  CLI::App* set_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* sync_ = nullptr;
  CLI::App* diff_ = nullptr;
  CLI::App* rotate_ = nullptr;
  CLI::App* backup_ = nullptr;
  CLI::App* restore_ = nullptr;
  CLI::App* backups_ = nullptr;
  CLI::App* init_ = nullptr;
  CLI::App* security_ = nullptr;
  CLI::App* test_ = nullptr;

  std::string scope_ = "org";
  std::string file_;
  std::string name_;
  std::string value_file_;
  bool no_sync_ = false;
  bool dry_run_ = false;
  std::vector<std::string> repos_;
  std::vector<std::string> names_;
  std::string reason_;
  std::string out_;
  bool to_r2_ = false;
  std::string from_r2_;
  std::string passphrase_env_;
  std::string repo_dir_ = ".";
  std::string env_file_ = ".env";
};

}  // namespace orgd::cli
