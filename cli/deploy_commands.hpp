#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/client.hpp"

namespace orgd::cli {

// `orgctl deploy`: the plain form deploys (`orgctl deploy api web --env dev`); the
// sub-subcommands `get`, `list` and `cancel` read and stop deploys. CLI11 matches a command name
// before a positional, so a repo named like a command (get, list, cancel, or a top-level one such
// as status) must follow `--` on the plain form: `orgctl deploy --env dev -- list`.
class DeployCommands {
 public:
  void add_to(CLI::App& app);
  bool parsed() const;
  // Problems CLI11 cannot express (--env is required only by the plain form); empty when none.
  std::string usage_error() const;
  ExitCode run(Client& client, bool json);

 private:
  ExitCode run_deploy(Client& client, bool json);
  ExitCode run_get(Client& client, bool json);
  ExitCode run_list(Client& client, bool json);
  ExitCode run_cancel(Client& client, bool json);

  CLI::App* deploy_ = nullptr;
  CLI::App* get_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* cancel_ = nullptr;

  std::vector<std::string> repos_;
  bool all_ = false;
  std::string env_;
  std::string ref_;
  bool dry_run_ = false;
  bool wait_ = false;
  std::string on_failure_;
  std::string reason_;
  std::string request_id_;

  std::string deploy_id_;
  bool get_wait_ = false;
  std::string list_env_;
  std::string list_repo_;
  int limit_ = 0;
  std::string cancel_reason_;
};

// 32 random hex digits: the idempotency key of one `orgctl deploy` (DESIGN.md §4).
std::string random_request_id();

}  // namespace orgd::cli
