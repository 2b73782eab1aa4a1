// orgd: the organization controller daemon. This file only parses flags and wires.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "daemon/app/daemon.hpp"
#include "daemon/core/build_info.hpp"
#include "daemon/core/config.hpp"
#include "daemon/core/errors.hpp"
#include "daemon/core/file_checks.hpp"
#include "daemon/core/logging.hpp"
#include "daemon/core/process_hardening.hpp"
#include "daemon/deploy/inventory.hpp"
#include "daemon/net/https_client.hpp"

int main(int argc, char** argv) {
  // Before anything reads a secret: a core of orgd would hold every credential it keeps.
  const std::string core_dumps = orgd::disable_core_dumps();
  CLI::App app{"orgd: the organization controller daemon on NATS"};
  std::string config_path;
  bool check_config = false;
  bool version = false;
  std::string log_level;
  std::string log_format;
  app.add_option("-c,--config", config_path,
                 "Config file (YAML); without it orgd reads the YAML in $ORGD_CONFIG_YAML, else "
                 "runs the embedded default (config/orgd.dev.yaml)")
      ->envname("ORGD_CONFIG");
  app.add_flag("--check-config", check_config,
               "Validate the config and exit: 0 when valid, 2 with the errors when not");
  app.add_flag("--version", version, "Print the version and exit");
  app.add_option("--log-level", log_level, "Override log.level")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--log-format", log_format, "Override log.format")
      ->check(CLI::IsMember({"text", "json"}));
  std::string ports_file;
  app.add_option("--ports-file", ports_file,
                 "Once listening, write {\"http\":PORT,\"nats\":\"URL\"} to FILE (atomically; "
                 "removed at start): how a test or supervisor that configured port 0 learns the "
                 "ports orgd bound");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::printf("orgd %s (%s)\n", orgd::build::kVersion, orgd::build::kRevision);
    return 0;
  }

  auto env = orgd::Environment::current();
  orgd::Config config;
  try {
    config = orgd::load_daemon_config(config_path, env);
  } catch (const orgd::ConfigError& e) {
    std::cerr << "orgd: invalid config:\n" << e.what() << "\n";
    return 2;
  }
  orgd::MetricsRegistry check_metrics;
  std::shared_ptr<const orgd::deploy::Inventory> inventory;
  try {
    // Provider and target settings are the providers' to check, and which provider offers
    // what (a deploy target naming a provider without deploy targets is a config error).
    orgd::ProviderEnvironment providers;
    providers.org = config.org;
    providers.data_dir = config.nats.data_dir;
    providers.environment = env;
    providers.subject_prefix = config.prefix();
    // Clients are built as the daemon builds them (a bad ca_file or proxy fails here too); no
    // request is made.
    providers.http = orgd::make_https_transport_factory(check_metrics, env);
    inventory = orgd::deploy::Inventory::build(config, orgd::ProviderRegistry{}, providers);
  } catch (const orgd::ConfigError& e) {
    std::cerr << "orgd: invalid config:\n" << e.what() << "\n";
    return 2;
  }
  // Credential and TLS files are checked now, so a missing or unreadable one is named at once
  // (with --check-config too) instead of surfacing as a refused connection.
  if (auto problems = orgd::unreadable_files(orgd::nats_files(config.nats)); !problems.empty()) {
    std::cerr << "orgd: invalid config:\n";
    for (const auto& problem : problems) {
      std::cerr << orgd::config_origin(config_path, env) << ": " << problem << "\n";
    }
    return 2;
  }
  if (check_config) {
    std::cout << "config " << orgd::config_origin(config_path, env) << " is valid ("
              << config.repos.size() << " repos, " << config.providers.size()
              << " providers)\n";
    for (const auto& provider : inventory->providers().all()) {
      const auto offers = provider->capabilities().names();
      std::cout << "  provider " << provider->name() << " (" << provider->type() << "): "
                << (offers.empty() ? std::string{"nothing"} : fmt::format("{}", fmt::join(offers, ", ")))
                << "\n";
    }
    return 0;
  }
  if (!log_level.empty()) config.log.level = log_level;
  if (!log_format.empty()) config.log.format = log_format;
  orgd::logging::setup(config.log);
  if (!core_dumps.empty()) {
    orgd::logging::get("orgd")->warn("core dumps could not be turned off: {}", core_dumps);
  }

  try {
    orgd::DaemonOptions options;
    options.config_path = config_path;
    options.ports_file = ports_file;
    // A file left by an earlier run must not be read as this one's.
    if (!ports_file.empty()) std::filesystem::remove(ports_file);
    orgd::Daemon daemon(std::move(config), options, std::move(env));
    return daemon.run();
  } catch (const std::exception& e) {
    orgd::logging::get("orgd")->critical("start-up failed: {}", e.what());
    return 1;
  }
}
