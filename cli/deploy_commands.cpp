#include "cli/deploy_commands.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string_view>

#include "cli/deploy_follow.hpp"
#include "cli/deploy_view.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::cli {

namespace {

// Cursor movement only where a person watches a terminal that understands it.
bool live_terminal() {
  const char* term = std::getenv("TERM");
  return isatty(STDOUT_FILENO) == 1 && term != nullptr && std::string_view(term) != "dumb";
}

}  // namespace

std::string random_request_id() {
  std::random_device random;  // the kernel's CSPRNG on Linux: ids of two machines never collide
  std::string out;
  for (int i = 0; i < 4; ++i) out += fmt::format("{:08x}", random());
  return out;
}

void DeployCommands::add_to(CLI::App& app) {
  deploy_ = app.add_subcommand(
      "deploy", "Deploy repos to an environment in dependency order, or show and cancel deploys");
  deploy_->fallthrough();
  deploy_->footer(
      "Examples:\n"
      "  orgctl deploy api web --env dev --wait   deploy two repos and follow them\n"
      "  orgctl deploy --all --env dev --dry-run  show the plan only\n"
      "  orgctl deploy get ID [--wait]            one deploy's steps (and follow it)\n"
      "  orgctl deploy list --env dev             recent deploys, newest first\n"
      "  orgctl deploy cancel ID                  stop a running deploy\n"
      "Exit codes with --wait: 0 succeeded, 1 failed, cancelled or rolled back, 2 usage,\n"
      "3 orgd unreachable, 130 Ctrl-C (following stops, the deploy goes on).");
  deploy_->add_option("repos", repos_,
                      "Repos to deploy; dependencies go first. A repo named like an orgctl "
                      "command (get, list, cancel, status...) goes after --: "
                      "orgctl deploy --env dev -- list");
  deploy_->add_flag("--all", all_, "Deploy every repo with a target in the environment");
  deploy_->add_option("-e,--env", env_, "Environment to deploy to (required)");
  deploy_->add_option("--ref", ref_, "Git ref to deploy (default: none; the provider gets an empty ORGD_REF)");
  deploy_->add_flag("--dry-run", dry_run_, "Print the plan (waves) without deploying anything");
  deploy_->add_flag("-w,--wait", wait_,
                    "Follow the deploy until it ends; exit non-zero unless it succeeded");
  deploy_
      ->add_option("--on-failure", on_failure_,
                   "When a step fails: stop (no dependent starts) or rollback (undo completed "
                   "steps in reverse order); default: deploy.on_failure of orgd's config")
      ->check(CLI::IsMember({"stop", "rollback"}));
  deploy_->add_option("--reason", reason_, "Why, for the deploy record and the audit trail");
  deploy_->add_option("--request-id", request_id_,
                      "Idempotency key: a repeated request with the same id returns the first "
                      "deploy instead of starting another (default: random)");

  get_ = deploy_->add_subcommand("get", "One deploy: state and steps");
  get_->fallthrough();
  get_->add_option("id", deploy_id_, "Deploy id")->required();
  get_->add_flag("-w,--wait", get_wait_,
                 "Follow the deploy until it ends; exit non-zero unless it succeeded");

  list_ = deploy_->add_subcommand("list", "Recent deploys, newest first");
  list_->fallthrough();
  list_->add_option("--env", list_env_, "Only deploys to this environment");
  list_->add_option("--repo", list_repo_, "Only deploys that include this repo");
  list_->add_option("--limit", limit_, "At most this many (default 20)")->check(CLI::Range(1, 500));

  cancel_ = deploy_->add_subcommand(
      "cancel", "Cancel a deploy: no new step starts; running steps finish");
  cancel_->fallthrough();
  cancel_->add_option("id", deploy_id_, "Deploy id")->required();
  cancel_->add_option("--reason", cancel_reason_, "Why, for the deploy record");
}

bool DeployCommands::parsed() const { return deploy_ != nullptr && deploy_->parsed(); }

std::string DeployCommands::usage_error() const {
  bool sub = get_->parsed() || list_->parsed() || cancel_->parsed();
  if (sub) {
    // Extra words after `deploy get ID` land in the parent's repos positional.
    if (!repos_.empty()) return fmt::format("unexpected argument '{}'", repos_.front());
    return {};
  }
  if (repos_.empty() && !all_) return "name the repos to deploy, or pass --all";
  if (!repos_.empty() && all_) return "name repos or pass --all, not both";
  if (env_.empty()) return "--env is required";
  return {};
}

ExitCode DeployCommands::run(Client& client, bool json) {
  if (get_->parsed()) return run_get(client, json);
  if (list_->parsed()) return run_list(client, json);
  if (cancel_->parsed()) return run_cancel(client, json);
  return run_deploy(client, json);
}

ExitCode DeployCommands::run_deploy(Client& client, bool json) {
  v1::DeployRequest request;
  for (const auto& repo : repos_) request.add_repos(repo);
  request.set_all(all_);
  request.set_env(env_);
  request.set_ref(ref_);
  request.set_request_id(request_id_.empty() ? random_request_id() : request_id_);
  request.set_dry_run(dry_run_);
  request.set_reason(reason_);
  request.set_on_failure(on_failure_);

  v1::DeployAccepted accepted;
  auto result = client.call_quietly("deploy", request, accepted);
  if (result.code == ExitCode::unreachable) {
    // orgd may have accepted the deploy and only the reply was lost: the same request id asks
    // for that deploy again instead of starting a second one.
    result = client.call_quietly("deploy", request, accepted);
  }
  if (result.code != ExitCode::ok) {
    std::cerr << "orgctl: " << result.error << "\n";
    if (result.code == ExitCode::unreachable && !dry_run_) {
      std::cerr << fmt::format(
          "orgctl: the deploy may have been accepted; retry with --request-id {} so that it "
          "cannot start twice\n",
          request.request_id());
    }
    return result.code;
  }
  if (json) {
    std::cout << result.body << std::endl;
  } else {
    std::cout << render_plan(accepted, ref_) << std::flush;
  }
  if (accepted.dry_run() || accepted.deploy_id().empty()) return ExitCode::ok;
  if (!wait_) {
    if (!json) {
      std::cout << fmt::format("follow it: orgctl deploy get {} --wait\n", accepted.deploy_id());
    }
    return ExitCode::ok;
  }
  DeployProgress progress(accepted.deploy_id());
  progress.set_plan(waves_of(accepted.waves()), accepted.env().empty() ? env_ : accepted.env(),
                    ref_);
  FollowOptions options;
  options.json = json;
  options.live = !json && live_terminal();
  return follow_deploy(client, progress, options);
}

ExitCode DeployCommands::run_get(Client& client, bool json) {
  if (get_wait_) {
    DeployProgress progress(deploy_id_);
    FollowOptions options;
    options.json = json;
    options.live = !json && live_terminal();
    return follow_deploy(client, progress, options);
  }
  v1::DeployRecord record;
  const auto result = get_whole_deploy(client, deploy_id_, record);
  if (result.code != ExitCode::ok) {
    std::cerr << "orgctl: " << result.error << "\n";
    return result.code;
  }
  if (json) {
    std::cout << encode(record, Encoding::json) << "\n";
  } else {
    std::cout << render_deploy_record(record, std::chrono::system_clock::now());
  }
  return ExitCode::ok;
}

ExitCode DeployCommands::run_list(Client& client, bool json) {
  v1::DeployListRequest request;
  request.set_env(list_env_);
  request.set_repo(list_repo_);
  request.set_limit(limit_);
  v1::DeployList list;
  auto code = client.call("deploy.list", request, list, json);
  if (code == ExitCode::ok && !json) {
    std::cout << render_deploy_list(list, std::chrono::system_clock::now());
  }
  return code;
}

ExitCode DeployCommands::run_cancel(Client& client, bool json) {
  v1::DeployCancelRequest request;
  request.set_deploy_id(deploy_id_);
  request.set_reason(cancel_reason_);
  v1::DeployRecord record;
  auto code = client.call("deploy.cancel", request, record, json);
  if (code == ExitCode::ok && !json) {
    std::string note;
    if (!is_terminal(record.state())) {
      note = fmt::format(
          " (cancel requested; running steps finish first: orgctl deploy get {} "
          "--wait)",
          record.deploy_id());
    }
    std::cout << fmt::format("deploy {}: {}{}\n", record.deploy_id(), state_name(record.state()),
                             note);
  }
  return code;
}

}  // namespace orgd::cli
