// orgctl: the operator CLI. Talks to orgd over NATS only (request-reply on P.api.*, and the
// deploy events on P.events.deploy.* while following a deploy).
#include <fmt/format.h>
#include <nats/nats.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

#include "cli/client.hpp"
#include "cli/deploy_commands.hpp"
#include "cli/deploy_view.hpp"
#include "cli/provider_view.hpp"
#include "cli/secrets_commands.hpp"
#include "daemon/core/build_info.hpp"
#include "daemon/events/codec.hpp"
#include "orgd/v1/health.pb.h"
#include "orgd/v1/status.pb.h"

namespace {

using orgd::cli::Client;
using orgd::cli::ClientOptions;
using orgd::cli::ExitCode;

std::string health_name(orgd::v1::Health::Status s) { return orgd::v1::Health::Status_Name(s); }

// Walks every page of a paged list (P.api.status, P.api.repos) into one reply that looks as a
// single reply did; -o json prints it once, whole.
template <class Request, class Reply>
ExitCode call_all_pages(Client& client, const std::string& op, Request request, Reply& all,
                        bool json) {
  // Pages of 500, halved while orgd says a page is over the server's max_payload.
  int page_size = 500;
  request.set_page_size(page_size);
  bool have_first = false;
  while (true) {
    Reply page;
    auto result = client.call_quietly(op, request, page);
    if (result.service_code == orgd::cli::kTooLarge && page_size > 1) {
      page_size /= 2;
      request.set_page_size(page_size);
      continue;
    }
    if (result.code != ExitCode::ok) {
      std::cerr << "orgctl: " << result.error << "\n";
      return result.code;
    }
    if (!have_first) {
      all = page;
      all.clear_repos();
      have_first = true;
    }
    for (auto& repo : *page.mutable_repos()) *all.add_repos() = std::move(repo);
    if (page.next_cursor().empty()) break;
    if (page.next_cursor() == request.cursor()) {
      std::cerr << "orgctl: " << op << ": orgd returned the same page twice (cursor "
                << page.next_cursor() << ")\n";
      return ExitCode::failed;
    }
    request.set_cursor(page.next_cursor());
  }
  all.clear_next_cursor();
  all.clear_total_repos();
  if (json) std::cout << orgd::encode(all, orgd::Encoding::json) << "\n";
  return ExitCode::ok;
}

void print_status_table(const orgd::v1::OrgStatus& status) {
  const auto now = std::chrono::system_clock::now();
  std::printf("org %s  (%zu repos)\n\n", status.org().c_str(),
              static_cast<std::size_t>(status.repos_size()));
  std::printf("%-24s %-9s %s\n", "REPO", "HEALTH", "SERVICES");
  for (const auto& repo : status.repos()) {
    std::string services;
    for (const auto& s : repo.services()) {
      if (!services.empty()) services += "  ";
      services +=
          fmt::format("{}={}{}{}", s.name(), health_name(s.status()), s.stale() ? "(stale)" : "",
                      s.version().empty() ? "" : " v" + s.version());
      services += fmt::format(" [{}]", orgd::cli::format_age(s.last_report_at(), now));
    }
    std::string deploys;
    if (!repo.deploys().empty()) {
      deploys = "  " + orgd::cli::format_deploy_summaries(repo.deploys(), now);
    }
    std::printf("%-24s %-9s %s%s\n", repo.name().c_str(), health_name(repo.health()).c_str(),
                services.empty() ? "-" : services.c_str(), deploys.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"orgctl: operate orgd over NATS"};
  app.require_subcommand(1);
  // Global flags (--server, -o, ...) may come after the subcommand too.
  app.fallthrough();
  ClientOptions options;
  options.add_flags(app);
  std::string output = "table";
  app.add_option("-o,--output", output,
                 "Output format: table, or json (orgd's replies as received)")
      ->check(CLI::IsMember({"table", "json"}));
  app.set_version_flag(
      "--version", fmt::format("orgctl {} ({})", orgd::build::kVersion, orgd::build::kRevision));

  auto* status_cmd = app.add_subcommand(
      "status", "Org status: every repo's health, services and last deploy per environment");
  std::string status_repo;
  status_cmd->add_option("repo", status_repo, "Only this repo");

  auto* repos_cmd = app.add_subcommand("repos", "The configured repos");
  auto* providers_cmd = app.add_subcommand(
      "providers",
      "The providers: what each offers, its last health probe, rate limit and circuit state");

  auto* health_cmd = app.add_subcommand("health", "Health reports");
  health_cmd->require_subcommand(1);
  auto* report_cmd = health_cmd->add_subcommand("report", "Publish a health report for a service");
  std::string repo, service, status_text, version, detail;
  int ttl = 0;
  report_cmd->add_option("repo", repo, "Repo")->required();
  report_cmd->add_option("service", service, "Service")->required();
  report_cmd->add_option("--status", status_text, "ok, degraded or down")
      ->required()
      ->check(CLI::IsMember({"ok", "degraded", "down"}));
  report_cmd->add_option("--ttl", ttl, "Seconds the report stays valid (default: the repo's)")
      ->check(CLI::Range(0, 7 * 24 * 3600));
  report_cmd->add_option("--version", version, "Service version");
  report_cmd->add_option("--detail", detail, "Free text");

  orgd::cli::DeployCommands deploy;
  deploy.add_to(app);
  orgd::cli::SecretsCommands secrets;
  secrets.add_to(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0; everything else is a usage error.
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ExitCode::usage);
  }
  if (deploy.parsed()) {
    if (auto problem = deploy.usage_error(); !problem.empty()) {
      std::cerr << "orgctl deploy: " << problem << "\nRun with --help for more information.\n";
      return static_cast<int>(ExitCode::usage);
    }
  }

  if (secrets.parsed() && secrets.local_only()) return static_cast<int>(secrets.run_local());
  // A sync or a rotation pushes to every target before it answers: wait longer than for a read.
  if (secrets.parsed() && app.get_option("--timeout")->count() == 0) {
    options.timeout_seconds = 300;
  }
  Client client(options);
  if (auto code = client.connect(); code != ExitCode::ok) return static_cast<int>(code);
  bool json = output == "json";

  if (status_cmd->parsed()) {
    if (!status_repo.empty()) {
      orgd::v1::RepoStatusRequest req;
      req.set_repo(status_repo);
      orgd::v1::RepoStatus reply;
      auto code = client.call("status.repo", req, reply, json);
      if (code != ExitCode::ok) return static_cast<int>(code);
      if (!json) {
        orgd::v1::OrgStatus one;
        one.set_org(client.org());
        *one.add_repos() = reply;
        print_status_table(one);
      }
      return 0;
    }
    orgd::v1::OrgStatus reply;
    auto code = call_all_pages(client, "status", orgd::v1::StatusRequest{}, reply, json);
    if (code != ExitCode::ok) return static_cast<int>(code);
    if (!json) print_status_table(reply);
    return 0;
  }

  if (repos_cmd->parsed()) {
    orgd::v1::RepoList reply;
    auto code = call_all_pages(client, "repos", orgd::v1::ReposRequest{}, reply, json);
    if (code != ExitCode::ok) return static_cast<int>(code);
    if (!json) {
      std::printf("%-24s %-24s %-16s %s\n", "REPO", "DEPENDS ON", "ENVS", "SERVICES");
      for (const auto& r : reply.repos()) {
        auto join = [](const auto& list) {
          std::string out;
          for (const auto& s : list) out += (out.empty() ? "" : ",") + s;
          return out.empty() ? std::string("-") : out;
        };
        std::printf("%-24s %-24s %-16s %s\n", r.name().c_str(), join(r.depends_on()).c_str(),
                    join(r.envs()).c_str(), join(r.services()).c_str());
      }
    }
    return 0;
  }

  if (providers_cmd->parsed()) {
    orgd::v1::ProvidersRequest req;
    orgd::v1::ProviderList reply;
    auto code = client.call("providers", req, reply, json);
    if (code != ExitCode::ok) return static_cast<int>(code);
    if (!json) {
      std::fputs(orgd::cli::render_provider_list(reply, std::chrono::system_clock::now()).c_str(),
                 stdout);
    }
    return 0;
  }

  if (deploy.parsed()) return static_cast<int>(deploy.run(client, json));
  if (secrets.parsed()) return static_cast<int>(secrets.run(client, json));

  if (report_cmd->parsed()) {
    orgd::v1::HealthReport report;
    orgd::v1::Health::Status st{};
    orgd::v1::Health::Status_Parse(status_text, &st);
    report.set_status(st);
    report.set_ttl_seconds(ttl);
    report.set_version(version);
    report.set_detail(detail);
    auto code = client.report_health(repo, service, report);
    if (code == ExitCode::ok && !json) {
      std::printf("reported %s/%s %s\n", repo.c_str(), service.c_str(), status_text.c_str());
    }
    return static_cast<int>(code);
  }
  return 0;
}
