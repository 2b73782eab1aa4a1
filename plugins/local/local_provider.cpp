#include "plugins/local/local_provider.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"

namespace orgd {

namespace fs = std::filesystem;

namespace {

// repo, env and deploy id become path components: refuse anything that could leave the data dir.
bool safe_component(const std::string& part) {
  return !part.empty() && part != "." && part != ".." && part.find('/') == std::string::npos &&
         part.find('\0') == std::string::npos;
}

Result<fs::path> record_dir(const std::string& data_dir, const DeployContext& context) {
  for (const auto* part : {&context.repo, &context.env, &context.deploy_id}) {
    if (!safe_component(*part)) {
      return invalid_argument("local provider: unusable repo, env or deploy id '" + *part + "'");
    }
  }
  return fs::path{data_dir} / "local" / context.repo / context.env;
}

Result<Ok> write_file(const fs::path& path, const std::string& content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return unavailable("cannot create " + path.parent_path().string() + ": " + ec.message());
  const fs::path temporary = path.string() + ".tmp";
  {
    std::ofstream out{temporary, std::ios::binary | std::ios::trunc};
    out << content;
    out.flush();
    if (!out) return unavailable("cannot write " + temporary.string());
  }
  // Renamed into place so a concurrent poll never reads half a record.
  fs::rename(temporary, path, ec);
  if (ec) return unavailable("cannot rename to " + path.string() + ": " + ec.message());
  return Ok{};
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
  if (auto written = write_file(path, record.dump(2) + "\n"); !written) return written.error();
  ++executions_;
  if (log) log("local deploy of " + context.repo + "@" + context.ref + " to " + context.env +
               " recorded in " + path.string());
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
  if (auto written = write_file(path, format_rfc3339(clock_->now()) + "\n"); !written) {
    return written.error();
  }
  if (log) log("local deploy " + context.deploy_id + " rolled back");
  return DeployProgress{DeployStatus::succeeded, context.deploy_id, {}};
}

LocalProvider::LocalProvider(std::string name, std::string data_dir,
                             std::shared_ptr<const Clock> clock)
    : Provider(std::move(name), "local"), data_dir_(std::move(data_dir)), clock_(std::move(clock)) {}

std::unique_ptr<DeployTarget> LocalProvider::make_deploy_target(const DeployTargetConfig& target,
                                                                const std::string& source_file) {
  SettingsReader reader{target.settings, source_file, target.line, "deploy." + target.env};
  LocalDeployTarget::Settings settings;
  settings.duration = reader.duration("duration", settings.duration);
  settings.fail = reader.boolean("fail", settings.fail);
  reader.finish();
  return std::make_unique<LocalDeployTarget>(settings, data_dir_, clock_);
}

std::unique_ptr<Provider> make_local_provider(const ProviderConfig& config,
                                              const ProviderEnvironment& env,
                                              const std::string& source_file) {
  SettingsReader reader{config.settings, source_file, config.line, "providers." + config.name};
  reader.finish();
  if (env.data_dir.empty()) {
    throw ConfigError({source_file + ": providers." + config.name +
                       ": the local provider needs a data directory"});
  }
  logging::get("plugin.local")->debug("provider {} writes under {}/local", config.name,
                                      env.data_dir);
  return std::make_unique<LocalProvider>(config.name, env.data_dir, env.clock);
}

}  // namespace orgd
