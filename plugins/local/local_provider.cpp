#include "plugins/local/local_provider.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "daemon/core/logging.hpp"
#include "daemon/core/state_files.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd {

namespace fs = std::filesystem;

namespace {

Result<fs::path> record_dir(const std::string& data_dir, const DeployContext& context) {
  for (const auto* part : {&context.repo, &context.env, &context.deploy_id}) {
    if (!safe_path_component(*part)) {
      return invalid_argument("local provider: unusable repo, env or deploy id '" + *part + "'");
    }
  }
  return fs::path{data_dir} / "local" / context.repo / context.env;
}

}  // namespace

LocalDeployTarget::LocalDeployTarget(Settings settings, std::string data_dir,
                                     std::shared_ptr<const Clock> clock)
    : settings_(settings), data_dir_(std::move(data_dir)), clock_(std::move(clock)) {}

Result<DeployProgress> LocalDeployTarget::start(const DeployContext& context, const LogSink& log) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const auto started = clock_->now();
  const nlohmann::json record = {
      {"repo", context.repo},
      {"env", context.env},
      {"ref", context.ref},
      {"deploy_id", context.deploy_id},
      {"attempt", context.attempt},
      {"started_at", format_rfc3339(started)},
      {"started_at_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(started.time_since_epoch()).count()},
  };
  const fs::path path = dir.value() / (context.deploy_id + ".json");
  if (auto written = write_file_atomically(path, record.dump(2) + "\n"); !written) {
    return written.error();
  }
  // After the record: a line here means the deploy happened, so a count across a restart never
  // includes a start that died before its record existed (recover() would rightly re-run it).
  const nlohmann::json execution = {{"deploy_id", context.deploy_id},
                                    {"attempt", context.attempt},
                                    {"started_at", record["started_at"]}};
  if (auto appended = append_line(dir.value() / "executions.log", execution.dump() + "\n");
      !appended) {
    return appended.error();
  }
  ++executions_;
  if (log) {
    log("local deploy of " + context.repo + "@" + context.ref + " to " + context.env +
        " recorded in " + path.string());
  }
  // An instant deploy (duration 0s) is done at once: no poll round trip.
  if (settings_.duration.count() == 0) return poll(context, context.deploy_id);
  return DeployProgress{DeployStatus::running, context.deploy_id, {}};
}

Result<DeployProgress> LocalDeployTarget::poll(const DeployContext& context,
                                               const std::string& handle) {
  DeployContext of_handle = context;
  of_handle.deploy_id = handle;
  auto dir = record_dir(data_dir_, of_handle);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (handle + ".json");
  std::ifstream in{path, std::ios::binary};
  if (!in) return not_found("local provider: no release record " + path.string());
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("started_at_ms") ||
      !record["started_at_ms"].is_number_integer()) {
    return internal_error("local provider: unreadable release record " + path.string());
  }
  const Clock::time_point started{std::chrono::duration_cast<Clock::time_point::duration>(
      std::chrono::milliseconds{record["started_at_ms"].get<std::int64_t>()})};
  if (clock_->now() - started < settings_.duration) {
    return DeployProgress{DeployStatus::running, handle, {}};
  }
  if (settings_.fail) {
    return DeployProgress{DeployStatus::failed, handle, "failed as configured (fail: true)"};
  }
  return DeployProgress{DeployStatus::succeeded, handle, {}};
}

Result<DeployProgress> LocalDeployTarget::rollback(const DeployContext& context,
                                                   const LogSink& log) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (context.deploy_id + ".rolled_back");
  if (auto written = write_file_atomically(path, format_rfc3339(clock_->now()) + "\n"); !written) {
    return written.error();
  }
  if (log) log("local deploy " + context.deploy_id + " rolled back");
  return DeployProgress{DeployStatus::succeeded, context.deploy_id, {}};
}

Result<DeployProgress> LocalDeployTarget::recover(const DeployContext& context) {
  auto dir = record_dir(data_dir_, context);
  if (!dir) return dir.error();
  const fs::path path = dir.value() / (context.deploy_id + ".json");
  std::ifstream in{path, std::ios::binary};
  if (!in) return not_found("local provider: deploy " + context.deploy_id + " never started");
  const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record.contains("attempt") ||
      !record["attempt"].is_number_integer()) {
    return internal_error("local provider: unreadable release record " + path.string());
  }
  if (record["attempt"].get<int>() != context.attempt) {
    return not_found("local provider: attempt " + std::to_string(context.attempt) + " of " +
                     context.deploy_id + " never started");
  }
  return poll(context, context.deploy_id);
}

LocalProvider::LocalProvider(std::string name, std::string data_dir,
                             std::shared_ptr<const Clock> clock)
    : Provider(std::move(name), "local"),
      data_dir_(std::move(data_dir)),
      clock_(std::move(clock)) {}

std::unique_ptr<DeployTarget> LocalProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                const std::string& source_file) {
  SettingsReader reader = target_settings(target, source_file);
  LocalDeployTarget::Settings settings;
  settings.duration = reader.duration("duration", settings.duration);
  settings.fail = reader.boolean("fail", settings.fail);
  reader.finish();
  return std::make_unique<LocalDeployTarget>(settings, data_dir_, clock_);
}

std::unique_ptr<Provider> make_local_provider(const ProviderConfig& config,
                                              const ProviderEnvironment& env,
                                              const std::string& source_file) {
  SettingsReader reader = provider_settings(config, source_file);
  reader.finish();
  if (env.data_dir.empty()) {
    throw ConfigError({source_file + ": providers." + config.name +
                       ": the local provider needs a data directory"});
  }
  logging::get("plugin.local")
      ->debug("provider {} writes under {}/local", config.name, env.data_dir);
  return std::make_unique<LocalProvider>(config.name, env.data_dir, env.clock);
}

}  // namespace orgd
