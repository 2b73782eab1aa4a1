#include "daemon/secrets/secrets_service.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "daemon/core/logging.hpp"
#include "daemon/core/timestamps.hpp"
#include "daemon/events/codec.hpp"
#include "daemon/secrets/dotenv.hpp"
#include "daemon/secrets/vault_backup.hpp"

namespace orgd::secrets {
namespace {

std::string new_id(std::string_view prefix) {
  unsigned char bytes[8];
  randombytes_buf(bytes, sizeof bytes);
  std::string id{prefix};
  for (const unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

// A subject token for a secret name: names are [A-Za-z0-9_.-]; a dot would split the token.
std::string subject_token(const std::string& name) {
  std::string out = name;
  std::replace(out.begin(), out.end(), '.', '_');
  return out.empty() ? "_" : out;
}

bool wanted(const std::set<std::string>& filter, const std::string& value) {
  return filter.empty() || filter.count(value) != 0;
}

}  // namespace

Result<std::optional<RotationVault::Active>> VaultRotationAdapter::active(
    const std::string& scope, const std::string& name) {
  auto head = vault_.head(scope, name);
  if (!head) {
    if (head.error().code == ErrorCode::not_found) return std::optional<Active>{};
    return head.error();
  }
  if (head.value().active == 0) return std::optional<Active>{};
  const VersionInfo* info = head.value().find(head.value().active);
  return std::optional<Active>{
      Active{head.value().active, info != nullptr ? info->created : head.value().updated}};
}

Result<std::uint64_t> VaultRotationAdapter::put_pending(const std::string& scope,
                                                        const std::string& name, Secret value) {
  return vault_.put_pending(scope, name, value, "rotate");
}

Result<Ok> VaultRotationAdapter::activate(const std::string& scope, const std::string& name,
                                          std::uint64_t version) {
  return vault_.activate(scope, name, version);
}

Result<Ok> VaultRotationAdapter::retire(const std::string& scope, const std::string& name,
                                        std::uint64_t version) {
  return vault_.retire(scope, name, version);
}

SecretsService::SecretsService(const Config& config, std::shared_ptr<SecretVault> vault,
                               MasterKey master_key, KvBucket& sync_bucket, std::shared_ptr<const ProviderSet> providers,
                               Publisher& events, MetricsRegistry& metrics, const Clock& clock,
                               std::function<bool()> is_leader, SecretsServiceOptions options)
    : config_(config),
      vault_(std::move(vault)),
      master_key_(std::move(master_key)),
      sync_bucket_(sync_bucket),
      providers_(std::move(providers)),
      events_(events),
      clock_(clock),
      is_leader_(std::move(is_leader)),
      options_(std::move(options)) {
  // Each built target with the config it came from (ProviderSet builds them in config order).
  for (const auto& [name, repo] : config_.repos) {
    const auto& built = providers_->secret_targets(name);
    for (std::size_t i = 0; i < built.size() && i < repo.secret_targets.size(); ++i) {
      targets_.push_back({repo.secret_targets[i].provider, name, &repo.secret_targets[i], built[i]});
    }
  }
  const auto& org_built = providers_->org_secret_targets();
  for (std::size_t i = 0; i < org_built.size() && i < config_.secrets.org_targets.size(); ++i) {
    targets_.push_back(
        {config_.secrets.org_targets[i].provider, "", &config_.secrets.org_targets[i], org_built[i]});
  }
  SyncOptions sync_options;
  sync_options.replica_id = options_.replica_id;
  syncer_ = std::make_unique<SecretSync>(sync_bucket_, vault_->digest_key(), sync_options, clock_);

  RotationEngine::Parts parts;
  parts.policies = config_.secrets.rotation;
  for (const auto& [name, repo] : config_.repos) {
    for (const auto& secret : repo.secrets) parts.repos_of_name[secret].push_back(name);
  }
  parts.vault = nullptr;  // set below: the adapter lives in this object
  parts.state = &sync_bucket_;
  parts.push = [this](const std::string& scope, const std::string& name) {
    return push_for_rotation(scope, name);
  };
  for (const auto& [name, policy] : config_.secrets.rotation) {
    if (policy.issuer.empty()) continue;
    if (Provider* provider = providers_->find(policy.issuer)) {
      parts.issuers[policy.issuer] = provider->credential_issuer();
    }
  }
  parts.clock = &clock_;
  parts.events = [this](const RotationEvent& e) {
    audit("rotation_" + e.kind, "rotate", {e.name}, e.scope, e.targets, e.actor,
          e.kind == "failed" ? "failed" : (e.kind == "behind" ? "partial" : "ok"), e.error,
          e.rotation_id, e.version);
  };
  rotation_vault_ = std::make_unique<VaultRotationAdapter>(*vault_);
  parts.vault = rotation_vault_.get();
  rotations_ = std::make_unique<RotationEngine>(std::move(parts), options_.rotation);

  operations_ok_ = &metrics.counter("orgd_secret_operations_total", "Secret operations",
                                    {{"result", "ok"}});
  operations_failed_ = &metrics.counter("orgd_secret_operations_total", "Secret operations",
                                        {{"result", "failed"}});
  auto backups = [&](const char* destination, const char* result) {
    return &metrics.counter("orgd_secret_backups_total", "Scheduled vault backups",
                            {{"destination", destination}, {"result", result}});
  };
  backups_dir_ok_ = backups("dir", "ok");
  backups_dir_failed_ = backups("dir", "failed");
  backups_store_ok_ = backups("store", "ok");
  backups_store_failed_ = backups("store", "failed");
  vault_->on_change([this](const VaultChange&) {
    std::lock_guard lock(mutex_);
    sync_wanted_at_ = std::chrono::steady_clock::now() + options_.settle;
    wake_.notify_all();
  });
}

SecretsService::~SecretsService() { stop(); }

std::vector<std::string> SecretsService::start() {
  std::vector<std::string> problems;
  for (const auto& source : config_.secrets.sources) {
    std::error_code ec;
    const auto time = std::filesystem::last_write_time(source.file, ec);
    if (auto imported = import_source(source); !imported) {
      problems.push_back(imported.error().message);
    }
    if (!ec) {
      std::lock_guard lock(mutex_);
      source_times_[source.file] = time;
    }
  }
  thread_ = std::thread([this] { loop(); });
  return problems;
}

void SecretsService::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

Result<v1::SecretsKey> SecretsService::key() const {
  v1::SecretsKey key;
  key.set_public_key(vault_->public_key());
  key.set_key_id(vault_->key_id());
  return key;
}

Result<std::size_t> SecretsService::import_source(const SecretSourceConfig& source) {
  const auto log = logging::get("secrets");
  std::ifstream in(source.file, std::ios::binary);
  if (!in) return not_found(fmt::format("secrets source {}: cannot be read", source.file));
  std::string text;
  char chunk[4096];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    text.append(chunk, static_cast<std::size_t>(in.gcount()));
    sodium_memzero(chunk, sizeof chunk);
    if (text.size() > kMaxDotenvBytes) {
      sodium_memzero(text.data(), text.size());
      return invalid_argument(fmt::format("secrets source {}: larger than {} bytes", source.file,
                                          kMaxDotenvBytes));
    }
  }
  const Secret contents = Secret::take(std::move(text));
  auto parsed = parse_dotenv(contents.expose(), source.file);
  if (!parsed) return parsed.error();
  for (const auto& warning : parsed.value().warnings) log->warn("{}", warning.message);
  std::size_t changed = 0;
  std::vector<std::string> names;
  for (const auto& entry : parsed.value().entries) {
    auto written = vault_->set(source.scope, entry.key, entry.value, "import");
    if (!written) {
      audit("rejected", "import", {entry.key}, source.scope, {}, "source:" + source.file,
            "failed", written.error().message, "");
      return Error{written.error().code,
                   fmt::format("{}:{}: {}: {}", source.file, entry.line, entry.key,
                               written.error().message)};
    }
    if (!written.value().unchanged) {
      ++changed;
      names.push_back(entry.key);
    }
  }
  if (changed > 0) {
    audit("imported", "import", names, source.scope, {}, "source:" + source.file, "ok", "", "");
  }
  log->info("secrets source {} ({}): {} values, {} changed", source.file, source.scope,
            parsed.value().entries.size(), changed);
  return changed;
}

Result<v1::SecretSetReply> SecretsService::set(const v1::SecretSetRequest& request) {
  const std::string scope = request.scope().empty() ? "org" : request.scope();
  if (scope != "org" && config_.repos.count(scope) == 0) {
    return invalid_argument("unknown scope " + scope + " (org or a configured repo)");
  }
  if (request.secrets_size() == 0) return invalid_argument("no secrets given");
  // Every value is opened before any is stored, so a bad one changes nothing.
  std::vector<std::pair<std::string, Secret>> values;
  for (const auto& item : request.secrets()) {
    if (auto checked = check_scope_and_name(scope, item.name()); !checked) return checked.error();
    auto opened = vault_->open_sealed(item.sealed_value());
    if (!opened) {
      audit("rejected", "set", {item.name()}, scope, {}, request.actor(), "failed",
            "the value is not sealed to this vault's key", request.request_id());
      return invalid_argument(item.name() +
                              ": the value is not sealed to this vault's key (ask "
                              "P.api.secrets.key again: the master key may have changed)");
    }
    values.emplace_back(item.name(), std::move(opened.value()));
  }
  v1::SecretSetReply reply;
  std::vector<std::string> changed;
  bool sync_was_wanted = false;
  {
    std::lock_guard lock(mutex_);
    sync_was_wanted = sync_wanted_at_.has_value();
  }
  for (auto& [name, value] : values) {
    auto written = vault_->set(scope, name, value, request.secrets_size() > 1 ? "import" : "set");
    if (!written) {
      operations_failed_->inc();
      return written.error();
    }
    auto* w = reply.add_written();
    w->set_name(name);
    w->set_scope(scope);
    w->set_version(static_cast<std::int64_t>(written.value().version));
    w->set_changed(!written.value().unchanged);
    if (!written.value().unchanged) changed.push_back(name);
  }
  operations_ok_->inc();
  audit(values.size() > 1 ? "imported" : "set", values.size() > 1 ? "import" : "set", changed,
        scope, {}, request.actor(), "ok", "", request.request_id());
  if (!request.sync() && !sync_was_wanted) {
    // The change callback asked for a sync; this request said not to push now (a sync another
    // change asked for before it still runs, and pushes these values too).
    std::lock_guard lock(mutex_);
    sync_wanted_at_.reset();
  }
  return reply;
}

Result<std::optional<DesiredSecret>> SecretsService::desired_value(
    const std::string& repo, const std::string& name, std::map<std::string, DesiredSecret>& cache) {
  for (const std::string& scope : {repo, std::string{"org"}}) {
    if (scope.empty()) continue;
    const std::string key = scope + "/" + name;
    if (const auto it = cache.find(key); it != cache.end()) return std::optional{it->second};
    auto head = vault_->head(scope, name);
    if (!head) {
      if (head.error().code == ErrorCode::not_found) continue;
      return head.error();
    }
    const std::uint64_t version = head.value().pending != 0 ? head.value().pending
                                                            : head.value().active;
    if (version == 0) continue;
    auto value = vault_->get(scope, name, version);
    if (!value) return value.error();
    DesiredSecret desired;
    desired.name = name;
    desired.scope = scope;
    desired.version = version;
    desired.value = std::make_shared<const Secret>(std::move(value.value()));
    cache.emplace(key, desired);
    return std::optional{desired};
  }
  return std::optional<DesiredSecret>{};
}

Result<std::vector<SyncTarget>> SecretsService::desired_targets(
    const std::set<std::string>& repos, bool org, const std::set<std::string>& names,
    std::vector<std::string>& missing) {
  std::vector<SyncTarget> out;
  std::map<std::string, DesiredSecret> cache;
  for (const TargetRef& ref : targets_) {
    if (ref.repo.empty() ? !org : !wanted(repos, ref.repo)) continue;
    std::vector<std::string> target_names = ref.config->names;
    if (target_names.empty() && !ref.repo.empty()) {
      target_names = config_.repos.at(ref.repo).secrets;
    }
    // A name filter selects targets that hold one of the names; each still gets its whole
    // desired set, as a name left out would look no longer desired to the plan.
    if (!names.empty() && std::none_of(target_names.begin(), target_names.end(),
                                       [&](const std::string& n) { return names.count(n); })) {
      continue;
    }
    std::vector<DesiredSecret> desired;
    bool complete = true;
    for (const auto& name : target_names) {
      auto value = desired_value(ref.repo, name, cache);
      if (!value) return value.error();
      if (!value.value()) {
        missing.push_back((ref.repo.empty() ? std::string{"org"} : ref.repo) + "/" + name);
        complete = false;
        continue;
      }
      desired.push_back(std::move(*value.value()));
    }
    // A target missing a value is synced with what there is, but never pruned: a value that is
    // gone from the vault is not a reason to delete it at the target.
    out.push_back(SyncTarget::make(ref.provider, ref.target, ref.config->prune && complete,
                                   std::move(desired)));
  }
  return out;
}

v1::SecretSyncReport SecretsService::report_of(const SyncResult& result,
                                               const std::string& sync_id) const {
  v1::SecretSyncReport report;
  report.set_sync_id(sync_id);
  report.set_dry_run(result.dry_run);
  for (const auto& target : result.targets) {
    std::set<std::string> failed;
    for (const auto& failure : target.failures) {
      failed.insert(failure.name);
      auto* r = report.add_results();
      r->set_target(target.target);
      r->set_name(failure.name);
      r->set_action("failed");
      r->set_error(failure.message);
    }
    for (const auto& entry : target.plan.entries) {
      if (failed.count(entry.name) != 0) continue;
      if (!result.dry_run && entry.action == SyncAction::none &&
          entry.reason == SyncReason::in_sync) {
        continue;  // the report of a real sync lists what it did, not all that was fine
      }
      auto* r = report.add_results();
      r->set_target(target.target);
      r->set_name(entry.name);
      r->set_reason(std::string{reason_name(entry.reason)});
      if (result.dry_run) {
        r->set_action(std::string{action_name(entry.action)});
      } else if (std::find(target.behind.begin(), target.behind.end(), entry.name) !=
                 target.behind.end()) {
        r->set_action("behind");
      } else {
        r->set_action(entry.action == SyncAction::put      ? "pushed"
                      : entry.action == SyncAction::remove ? "removed"
                                                           : "kept");
      }
    }
    report.set_pushed(report.pushed() + static_cast<std::int64_t>(target.pushed));
    report.set_removed(report.removed() + static_cast<std::int64_t>(target.removed));
    report.set_unchanged(report.unchanged() + static_cast<std::int64_t>(target.unchanged));
    report.set_failed(report.failed() + static_cast<std::int64_t>(target.failures.size()));
    if (target.error) {
      auto* r = report.add_results();
      r->set_target(target.target);
      r->set_action(target.claimed_elsewhere ? "elsewhere" : "failed");
      r->set_error(target.error->message);
      if (!target.claimed_elsewhere) report.set_failed(report.failed() + 1);
    }
    if (!target.in_sync() && !target.claimed_elsewhere) report.add_behind(target.target);
    // One listing per target, plus its writes (a listing after the puts notes update times).
    const std::int64_t lists = target.error ? 0 : 1 + (target.pushed > 0 ? 1 : 0);
    report.set_calls(report.calls() + lists + static_cast<std::int64_t>(target.pushed) +
                     static_cast<std::int64_t>(target.removed) +
                     static_cast<std::int64_t>(target.failures.size()));
  }
  *report.mutable_finished_at() = to_timestamp(clock_.now());
  return report;
}

Result<v1::SecretSyncReport> SecretsService::sync(const v1::SecretSyncRequest& request) {
  std::set<std::string> repos(request.repos().begin(), request.repos().end());
  for (const auto& repo : repos) {
    if (config_.repos.count(repo) == 0) return invalid_argument("unknown repo " + repo);
  }
  const std::set<std::string> names(request.names().begin(), request.names().end());
  const bool org = request.all() || repos.empty();
  std::vector<std::string> missing;
  auto targets = desired_targets(repos, org, names, missing);
  if (!targets) return targets.error();
  if (!request.targets().empty()) {
    const std::set<std::string> only(request.targets().begin(), request.targets().end());
    std::erase_if(targets.value(), [&](const SyncTarget& t) {
      return only.count(t.target->describe()) == 0 && only.count(t.id) == 0;
    });
  }
  const std::string sync_id =
      request.request_id().empty() ? new_id("s-") : "s-" + request.request_id();
  const SyncResult result = syncer_->sync(targets.value(), request.dry_run());
  auto report = report_of(result, sync_id);
  std::vector<std::string> described;
  for (const auto& t : result.targets) described.push_back(t.target);
  std::vector<std::string> changed;
  for (const auto& r : report.results()) {
    if (r.action() == "pushed" || r.action() == "removed" || r.action() == "failed") {
      changed.push_back(r.name());
    }
  }
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  if (!request.dry_run()) {
    audit("sync", "sync", changed, "", described, request.actor(),
          report.failed() > 0 ? "partial" : "ok",
          report.failed() > 0 ? fmt::format("{} failed", report.failed()) : "", sync_id);
    (report.failed() > 0 ? operations_failed_ : operations_ok_)->inc();
  }
  for (const auto& m : missing) logging::get("secrets")->warn("secret {} has no value", m);
  return report;
}

Result<PushOutcome> SecretsService::push_for_rotation(const std::string& scope,
                                                      const std::string& name) {
  // The targets that get this scope's value of the name: the repo's own, or for an org value
  // the org targets that list it and the repos that list it without their own value.
  std::set<std::string> repos;
  bool org = false;
  if (scope == "org") {
    org = true;
    for (const auto& [repo_name, repo] : config_.repos) {
      if (std::find(repo.secrets.begin(), repo.secrets.end(), name) == repo.secrets.end()) {
        continue;
      }
      auto own = vault_->head(repo_name, name);
      if (own && own.value().active != 0) continue;
      repos.insert(repo_name);
    }
    if (repos.empty()) repos.insert("");  // no repo: only org targets (an empty set means all)
  } else {
    repos.insert(scope);
  }
  std::vector<std::string> missing;
  auto targets = desired_targets(repos, org, {name}, missing);
  if (!targets) return targets.error();
  const SyncResult result = syncer_->sync(targets.value(), false);
  PushOutcome outcome;
  for (const auto& target : result.targets) {
    outcome.targets.push_back(target.target);
    if (target.in_sync() || target.claimed_elsewhere) {
      // Another replica applying this target pushes the same desired state; the next push
      // (the verification) sees it there or not.
      if (target.claimed_elsewhere) outcome.behind.push_back(target.target);
      continue;
    }
    outcome.behind.push_back(target.target);
    if (outcome.error.empty()) {
      outcome.error = target.error ? target.error->message
                      : !target.failures.empty()
                          ? target.target + ": " + target.failures.front().message
                          : target.target + ": not done";
    }
  }
  return outcome;
}

Result<v1::SecretRotateReport> SecretsService::rotate(const v1::SecretRotateRequest& request) {
  if (request.name().empty()) return invalid_argument("name is required");
  RotationRequest asked;
  asked.name = request.name();
  asked.scope = request.scope();
  asked.actor = request.actor();
  asked.reason = request.reason();
  asked.request_id = request.request_id();
  v1::SecretRotateReport report;
  if (request.dry_run()) {
    if (config_.secrets.rotation.count(request.name()) == 0) {
      return not_found("secret " + request.name() + " has no rotation policy (secrets.rotation)");
    }
    report.set_name(request.name());
    report.set_phase("dry_run");
    return report;
  }
  auto record = rotations_->request(asked);
  if (!record) return record.error();
  // Advanced at once when this orgd leads; otherwise the leader's next tick takes it.
  if (is_leader_ && is_leader_()) {
    if (auto advanced = rotations_->advance(record.value().scope, record.value().name)) {
      record = std::move(advanced.value());
    }
  } else {
    std::lock_guard lock(mutex_);
    wake_.notify_all();
  }
  const RotationRecord& r = record.value();
  report.set_rotation_id(r.id);
  report.set_name(r.name);
  report.set_scope(r.scope);
  report.set_phase(phase_name(r.phase));
  report.set_version(static_cast<std::int64_t>(r.new_version != 0 ? r.new_version
                                                                  : r.old_version));
  for (const auto& b : r.behind) report.add_behind(b);
  report.set_error(r.error);
  if (r.finished()) *report.mutable_finished_at() = to_timestamp(r.finished_at);
  return report;
}

Result<v1::SecretList> SecretsService::list(const v1::SecretListRequest& request) {
  const std::set<std::string> scopes(request.scopes().begin(), request.scopes().end());
  auto heads = vault_->list();
  if (!heads) return heads.error();
  v1::SecretList reply;
  SyncState state(sync_bucket_, clock_);
  std::map<std::string, TargetRecords> records;  // by target id, read once each
  std::map<std::string, DesiredSecret> cache;
  for (const auto& head : heads.value()) {
    if (!wanted(scopes, head.scope)) continue;
    auto* entry = reply.add_secrets();
    entry->set_name(head.name);
    entry->set_scope(head.scope);
    entry->set_version(static_cast<std::int64_t>(head.active));
    entry->set_rotating(head.pending != 0);
    *entry->mutable_updated_at() = to_timestamp(head.updated);
    if (const VersionInfo* v = head.find(head.active)) entry->set_source(v->source);
    for (const TargetRef& ref : targets_) {
      // Does this target get this scope's value of the name?
      std::vector<std::string> target_names = ref.config->names;
      if (target_names.empty() && !ref.repo.empty()) target_names = config_.repos.at(ref.repo).secrets;
      if (std::find(target_names.begin(), target_names.end(), head.name) == target_names.end()) {
        continue;
      }
      auto value = desired_value(ref.repo, head.name, cache);
      if (!value || !value.value() || value.value()->scope != head.scope) continue;
      const std::string id = target_id(ref.provider, ref.target->describe());
      auto loaded = records.find(id);
      if (loaded == records.end()) {
        auto read = state.load(id);
        loaded = records.emplace(id, read ? std::move(read.value()) : TargetRecords{}).first;
      }
      auto* t = entry->add_targets();
      t->set_target(ref.target->describe());
      const auto record = loaded->second.find(head.name);
      if (record == loaded->second.end()) {
        t->set_state("behind");
        continue;
      }
      auto digest = secret_digest(vault_->digest_key(), id, head.name, *value.value()->value);
      t->set_state(digest && digest.value() == record->second.record.digest ? "in_sync"
                                                                             : "behind");
      *t->mutable_pushed_at() = to_timestamp(record->second.record.pushed_at);
    }
  }
  for (const auto& [repo_name, repo] : config_.repos) {
    if (!wanted(scopes, repo_name)) continue;
    for (const auto& name : repo.secrets) {
      auto value = desired_value(repo_name, name, cache);
      if (value && !value.value()) reply.add_missing(repo_name + "/" + name);
    }
  }
  return reply;
}

Result<BackupKey> SecretsService::backup_key(const std::string& sealed_passphrase) const {
  if (sealed_passphrase.empty()) return BackupKey::with_master_key(master_key_.clone());
  auto opened = vault_->open_sealed(sealed_passphrase);
  if (!opened) return invalid_argument("the passphrase is not sealed to this vault's key");
  return BackupKey::with_passphrase(std::move(opened.value()), options_.backup_kdf_cost);
}

Result<v1::SecretBackupReply> SecretsService::backup(const v1::SecretBackupRequest& request) {
  ObjectStore* store = backup_store();
  if ((request.to_store() || request.list_store()) && store == nullptr) {
    return invalid_argument("no object store for backups: secrets.backup.r2 is not configured");
  }
  v1::SecretBackupReply reply;
  if (request.list_store()) {
    auto listed = store_backups(*store);
    if (!listed) return listed.error();
    reply.set_store(store->describe());
    for (const auto& object : listed.value()) {
      auto* stored = reply.add_stored();
      stored->set_key(object.key);
      stored->set_size(static_cast<std::int64_t>(object.size));
      if (object.modified) *stored->mutable_modified() = to_timestamp(*object.modified);
    }
    return reply;
  }
  auto key = backup_key(request.sealed_passphrase());
  if (!key) return key.error();
  auto heads = vault_->list();
  const auto now = clock_.now();
  auto written = make_backup(*vault_, key.value(), clock_);
  std::vector<std::string> targets;
  if (written && request.to_store()) {
    targets.push_back(store->describe());
    auto put = write_store_backup(*store, written.value(), now);
    if (!put) {
      written = put.error();
    } else {
      reply.set_store_key(put.value());
      reply.set_store(store->describe());
      targets.back() += put.value();
      if (auto pruned = prune_store_backups(*store, config_.secrets.backup.keep); !pruned) {
        logging::get("secrets")->warn("pruning the backups in {}: {}", store->describe(),
                                      pruned.error().message);
      }
    }
  }
  if (!written) {
    audit("backup", "backup", {}, "", targets, request.actor(), "failed", written.error().message,
          "");
    operations_failed_->inc();
    return written.error();
  }
  reply.set_secrets(heads ? static_cast<std::int64_t>(heads.value().size()) : 0);
  if (!request.to_store()) reply.set_backup(std::move(written.value()));
  *reply.mutable_created_at() = to_timestamp(now);
  audit("backup", "backup", {}, "", targets, request.actor(), "ok", "", "");
  operations_ok_->inc();
  return reply;
}

Result<v1::SecretRestoreReply> SecretsService::restore(const v1::SecretRestoreRequest& request) {
  std::vector<std::string> targets;
  std::string fetched;
  if (!request.store_key().empty()) {
    if (!request.backup().empty()) {
      return invalid_argument("set one of backup and store_key, not both");
    }
    ObjectStore* store = backup_store();
    if (store == nullptr) {
      return invalid_argument("no object store for backups: secrets.backup.r2 is not configured");
    }
    targets.push_back(store->describe() + request.store_key());
    auto got = store->get(request.store_key());
    if (!got) {
      audit("restore", "restore", {}, "", targets, request.actor(), "failed", got.error().message,
            request.request_id());
      operations_failed_->inc();
      return got.error();
    }
    fetched = std::move(got.value());
  }
  const std::string_view bytes =
      request.store_key().empty() ? std::string_view{request.backup()} : std::string_view{fetched};
  auto key = backup_key(request.sealed_passphrase());
  if (!key) return key.error();
  auto restored = restore_backup(*vault_, bytes, key.value());
  if (!restored) {
    audit("restore", "restore", {}, "", targets, request.actor(), "failed",
          restored.error().message, request.request_id());
    operations_failed_->inc();
    return restored.error();
  }
  v1::SecretRestoreReply reply;
  reply.set_restored(static_cast<std::int64_t>(restored.value().restored));
  reply.set_unchanged(static_cast<std::int64_t>(restored.value().unchanged));
  audit("restore", "restore", {}, "", targets, request.actor(), "ok", "", request.request_id());
  operations_ok_->inc();
  return reply;
}

void SecretsService::audit(const std::string& kind, const std::string& action,
                           std::vector<std::string> names, const std::string& scope,
                           std::vector<std::string> targets, const std::string& actor,
                           const std::string& result, const std::string& error,
                           const std::string& id, std::uint64_t version) {
  v1::SecretEvent event;
  event.set_kind(kind);
  event.set_action(action);
  event.set_actor(actor);
  for (auto& n : names) event.add_names(std::move(n));
  event.set_scope(scope);
  for (auto& t : targets) event.add_targets(std::move(t));
  event.set_result(result);
  event.set_error(error);
  event.set_id(id);
  event.set_version(static_cast<std::int64_t>(version));
  *event.mutable_at() = to_timestamp(clock_.now());
  BusMessage message;
  const std::string token = event.names_size() == 1 ? subject_token(event.names(0)) : "_";
  message.subject = options_.prefix + ".events.secrets." + token + "." + kind;
  message.data = encode(event, Encoding::json);
  if (auto sent = events_.publish(message); !sent) {
    logging::get("secrets")->warn("secrets event {} not published: {}", kind,
                                  sent.error().message);
  }
}

void SecretsService::flush_pending_sync() {
  {
    std::lock_guard lock(mutex_);
    if (!sync_wanted_at_) return;
    sync_wanted_at_.reset();
  }
  v1::SecretSyncRequest request;
  request.set_all(true);
  request.set_actor("orgd:vault-change");
  if (auto done = sync(request); !done) {
    logging::get("secrets")->warn("sync after a vault change: {}", done.error().message);
  }
}

void SecretsService::watch_sources() {
  for (const auto& source : config_.secrets.sources) {
    std::error_code ec;
    const auto time = std::filesystem::last_write_time(source.file, ec);
    if (ec) continue;
    {
      std::lock_guard lock(mutex_);
      auto& known = source_times_[source.file];
      if (known == time) continue;
      known = time;
    }
    if (auto imported = import_source(source); !imported) {
      logging::get("secrets")->warn("{}", imported.error().message);
    }
  }
}

void SecretsService::scheduled_backup() {
  const auto& backup = config_.secrets.backup;
  ObjectStore* store = backup_store();
  if (backup.dir.empty() && store == nullptr) return;
  const auto now = clock_.now();
  if (last_backup_ != Clock::time_point{} && now - last_backup_ < backup.interval) return;
  // A failure is tried again at the next interval, not at the next tick.
  last_backup_ = now;
  const auto failed = [&](const std::string& where, const Error& error, Counter* counter) {
    logging::get("secrets")->warn("scheduled backup to {}: {}", where, error.message);
    audit("backup", "backup", {}, "", {where}, "orgd:schedule", "failed", error.message, "");
    counter->inc();
    operations_failed_->inc();
  };
  // One backup, the same encrypted bytes in every destination.
  auto bytes = make_backup(*vault_, BackupKey::with_master_key(master_key_.clone()), clock_);
  if (!bytes) {
    failed(backup.dir.empty() ? store->describe() : backup.dir, bytes.error(),
           backup.dir.empty() ? backups_store_failed_ : backups_dir_failed_);
    return;
  }
  if (!backup.dir.empty()) {
    auto written = write_backup_file(backup.dir, bytes.value(), now);
    if (written) {
      if (auto pruned = prune_backups(backup.dir, backup.keep); !pruned) written = pruned.error();
    }
    if (!written) {
      failed(backup.dir, written.error(), backups_dir_failed_);
    } else {
      audit("backup", "backup", {}, "", {written.value().string()}, "orgd:schedule", "ok", "", "");
      backups_dir_ok_->inc();
    }
  }
  if (store != nullptr) {
    auto put = write_store_backup(*store, bytes.value(), now);
    if (!put) {
      failed(store->describe(), put.error(), backups_store_failed_);
      return;
    }
    const std::string where = store->describe() + put.value();
    if (auto pruned = prune_store_backups(*store, backup.keep); !pruned) {
      // The backup is there; the old ones go at the next interval.
      failed(where, pruned.error(), backups_store_failed_);
      return;
    }
    audit("backup", "backup", {}, "", {where}, "orgd:schedule", "ok", "", "");
    backups_store_ok_->inc();
  }
}

void SecretsService::tick() {
  watch_sources();
  bool due = false;
  {
    std::lock_guard lock(mutex_);
    due = sync_wanted_at_ && std::chrono::steady_clock::now() >= *sync_wanted_at_;
  }
  if (due) flush_pending_sync();
  if (!is_leader_ || !is_leader_()) return;
  (void)rotations_->tick();
  const auto now = clock_.now();
  const auto interval = config_.secrets.sync_interval;
  if (interval > Duration::zero() &&
      (last_interval_sync_ == Clock::time_point{} || now - last_interval_sync_ >= interval)) {
    last_interval_sync_ = now;
    v1::SecretSyncRequest request;
    request.set_all(true);
    request.set_actor("orgd:sync_interval");
    if (auto done = sync(request); !done) {
      logging::get("secrets")->warn("scheduled sync: {}", done.error().message);
    }
  }
  scheduled_backup();
}

void SecretsService::loop() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, options_.tick);
    if (stop_) break;
    lock.unlock();
    tick();
    lock.lock();
  }
}

}  // namespace orgd::secrets
