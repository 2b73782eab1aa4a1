#include "cli/secrets_commands.hpp"

#include <fmt/format.h>
#include <sodium.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/deploy_commands.hpp"
#include "cli/deploy_view.hpp"
#include "cli/secrets_files.hpp"
#include "daemon/secrets/dotenv.hpp"
#include "orgd/v1/providers.pb.h"
#include "orgd/v1/secrets.pb.h"

namespace orgd::cli {
namespace {

constexpr std::size_t kMaxValueBytes = 64 * 1024;
constexpr std::size_t kMaxBackupBytes = 512 * 1024 * 1024;

// The user's name for the audit trail: $USER@host.
std::string actor() {
  const char* user = std::getenv("USER");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return fmt::format("orgctl:{}@{}", user != nullptr ? user : "unknown", host);
}

// Reads a whole stream into Secret memory, at most `limit` bytes; one trailing newline (what
// `echo` and a terminal add) is dropped.
Result<Secret> read_value(std::istream& in, std::size_t limit) {
  std::string bytes;
  char chunk[4096];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    bytes.append(chunk, static_cast<std::size_t>(in.gcount()));
    sodium_memzero(chunk, sizeof chunk);
    if (bytes.size() > limit) {
      sodium_memzero(bytes.data(), bytes.size());
      return invalid_argument(fmt::format("the value is larger than {} bytes", limit));
    }
  }
  if (!bytes.empty() && bytes.back() == '\n') bytes.pop_back();
  if (!bytes.empty() && bytes.back() == '\r') bytes.pop_back();
  return Secret::take(std::move(bytes));
}

// A value typed at the terminal, not echoed.
Result<Secret> prompt_value(const std::string& prompt) {
  std::fprintf(stderr, "%s", prompt.c_str());
  termios saved{};
  const bool tty = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (tty) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::fprintf(stderr, "\n");
  return Secret::take(std::move(line));
}

Result<std::string> read_file_bytes(const std::string& path, std::size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open " + path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() > limit) return invalid_argument(path + " is too large");
  return bytes;
}

void print_error(const std::string& what, const Error& error) {
  std::cerr << "orgctl secrets " << what << ": " << error.message << "\n";
}

std::string format_time(const google::protobuf::Timestamp& t,
                        std::chrono::system_clock::time_point now) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return format_age(t, now);
}

void print_sync_report(const v1::SecretSyncReport& report, bool changes_only) {
  std::size_t shown = 0;
  for (const auto& r : report.results()) {
    if (changes_only && (r.action() == "none" || r.action() == "unchanged")) continue;
    if (shown++ == 0) std::printf("%-40s %-32s %-10s %s\n", "TARGET", "NAME", "ACTION", "WHY");
    std::printf("%-40s %-32s %-10s %s%s\n", r.target().c_str(), r.name().c_str(),
                r.action().c_str(), r.reason().c_str(),
                r.error().empty() ? "" : (" (" + r.error() + ")").c_str());
  }
  if (shown == 0 && changes_only) std::printf("in sync: nothing to push or remove\n");
  if (report.dry_run()) {
    std::printf("dry run: nothing was changed\n");
  } else {
    std::printf("pushed %lld, removed %lld, unchanged %lld, failed %lld (%lld target calls)\n",
                static_cast<long long>(report.pushed()), static_cast<long long>(report.removed()),
                static_cast<long long>(report.unchanged()),
                static_cast<long long>(report.failed()), static_cast<long long>(report.calls()));
  }
  for (const auto& target : report.behind()) std::printf("behind: %s\n", target.c_str());
}

}  // namespace

void SecretsCommands::add_to(CLI::App& app) {
  secrets_ = app.add_subcommand("secrets", "The vault: import, set, list, sync, rotate, back up");
  secrets_->require_subcommand(1);
  secrets_->footer(
      "Values never go on the command line: `set` reads stdin, a file or the terminal, and\n"
      "every value is sealed to the vault's public key before it leaves orgctl.\n"
      "Examples:\n"
      "  orgctl secrets import .env --scope api      every KEY=value of a .env file\n"
      "  printf %s \"$TOKEN\" | orgctl secrets set NPM_TOKEN\n"
      "  orgctl secrets list                         names, versions, ages, sync state\n"
      "  orgctl secrets diff                         what a sync would change\n"
      "  orgctl secrets sync [--dry-run]             push what changed to every target\n"
      "  orgctl secrets rotate SESSION_KEY\n"
      "  orgctl secrets backup --out vault.bak --passphrase-env BACKUP_PASSPHRASE\n"
      "  orgctl secrets backup --to-r2               into secrets.backup.r2's bucket\n"
      "  orgctl secrets backups                      the backups in that bucket\n"
      "  orgctl secrets restore r2://orgd-vault-20261203T114109Z.bak\n"
      "  orgctl secrets init && orgctl secrets security   in a checkout (no orgd needed)");

  import_ = secrets_->add_subcommand("import", "Import every value of a .env file into the vault");
  import_->fallthrough();
  import_->add_option("file", file_, ".env file")->required();
  import_->add_option("--scope", scope_, "org (default) or a repo's name");
  import_->add_flag("--no-sync", no_sync_, "Store only; do not push to the targets now");

  set_ = secrets_->add_subcommand(
      "set", "Set one secret: the value from stdin, --from-file, or typed at the terminal");
  set_->fallthrough();
  set_->add_option("name", name_, "Secret name")->required();
  set_->add_option("--scope", scope_, "org (default) or a repo's name");
  set_->add_option("--from-file", value_file_, "Read the value from this file");
  set_->add_flag("--no-sync", no_sync_, "Store only; do not push to the targets now");

  list_ = secrets_->add_subcommand(
      "list", "Names, scope, version, age and whether each target has the current value");
  list_->fallthrough();
  list_->add_option("--scope", repos_, "Only these scopes (org or repo names)");

  sync_ = secrets_->add_subcommand("sync", "Push what changed to the targets");
  sync_->fallthrough();
  sync_->add_flag("--dry-run", dry_run_, "Only print the plan (names and actions)");
  sync_->add_option("--repo", repos_, "Only these repos' targets");
  sync_->add_option("--name", names_, "Only these secrets");

  diff_ = secrets_->add_subcommand("diff", "What a sync would change (a dry run's changes)");
  diff_->fallthrough();
  diff_->add_option("--repo", repos_, "Only these repos' targets");

  rotate_ = secrets_->add_subcommand(
      "rotate", "Rotate a secret: new value, pushed everywhere, then the old one retired");
  rotate_->fallthrough();
  rotate_->add_option("name", name_, "Secret name (secrets.rotation.<name>)")->required();
  rotate_->add_option("--scope", scope_, "org or a repo's name (default: where it is)");
  rotate_->add_option("--reason", reason_, "Why, for the audit trail");

  backup_ = secrets_->add_subcommand(
      "backup", "Write the whole vault to an encrypted file (--out) or to R2 (--to-r2)");
  backup_->fallthrough();
  auto* out = backup_->add_option("--out", out_, "File to write (mode 600)");
  auto* to_r2 = backup_->add_flag(
      "--to-r2", to_r2_,
      "orgd writes the backup to secrets.backup.r2's bucket and prints its key (the bytes do "
      "not come to orgctl)");
  out->excludes(to_r2);
  backup_->add_option("--passphrase-env", passphrase_env_,
                      "Encrypt under the passphrase in this env var (default: the master key)");

  restore_ = secrets_->add_subcommand(
      "restore", "Restore the vault from a backup file, or from R2 (r2://KEY or --from-r2 KEY)");
  restore_->fallthrough();
  auto* file = restore_->add_option(
      "file", file_, "Backup file, or r2://KEY for an object of secrets.backup.r2's bucket");
  auto* from_r2 = restore_->add_option(
      "--from-r2", from_r2_,
      "orgd fetches this key from secrets.backup.r2's bucket (see `orgctl secrets backups`)");
  file->excludes(from_r2);
  restore_->add_option("--passphrase-env", passphrase_env_,
                       "The backup's passphrase is in this env var");

  backups_ = secrets_->add_subcommand(
      "backups", "List the backups in secrets.backup.r2's bucket (keys for restore r2://KEY)");
  backups_->fallthrough();

  test_ = secrets_->add_subcommand(
      "test", "Check every provider's credentials (its health probe); non-zero if one fails");
  test_->fallthrough();

  init_ = secrets_->add_subcommand(
      "init", "Write .env.example next to a .env: its names and comments, no values");
  init_->add_option("--env-file", env_file_, "The .env to read (default: ./.env)");

  security_ = secrets_->add_subcommand(
      "security",
      "Check the .env's mode (600) and .gitignore, and scan the git history for tokens "
      "(ghp_, github_pat_, ghs_, Cloudflare tokens, NATS seeds, private keys); non-zero if any");
  security_->add_option("--repo", repo_dir_, "The repository checkout (default: .)");
  security_->add_option("--env-file", env_file_, "The .env, relative to --repo (default: .env)");
}

bool SecretsCommands::parsed() const { return secrets_ != nullptr && secrets_->parsed(); }

bool SecretsCommands::local_only() const { return init_->parsed() || security_->parsed(); }

ExitCode SecretsCommands::run_local() {
  if (init_->parsed()) {
    return static_cast<ExitCode>(run_secrets_init(env_file_, std::cout, std::cerr));
  }
  SecurityOptions options;
  options.repo_dir = repo_dir_;
  options.env_file = env_file_;
  return static_cast<ExitCode>(run_secrets_security(options, std::cout, std::cerr));
}

ExitCode SecretsCommands::run(Client& client, bool json) {
  if (import_->parsed()) return run_import(client, json);
  if (set_->parsed()) return run_set(client, json);
  if (list_->parsed()) return run_list(client, json);
  if (sync_->parsed()) return run_sync(client, json, false);
  if (diff_->parsed()) return run_sync(client, json, true);
  if (rotate_->parsed()) return run_rotate(client, json);
  if (backup_->parsed()) return run_backup(client, json);
  if (restore_->parsed()) return run_restore(client, json);
  if (backups_->parsed()) return run_backups(client, json);
  if (test_->parsed()) return run_test(client, json);
  return ExitCode::usage;
}

std::optional<std::string> SecretsCommands::vault_key(Client& client) {
  v1::SecretsKeyRequest request;
  v1::SecretsKey key;
  const CallResult result = client.call_quietly("secrets.key", request, key);
  if (result.code != ExitCode::ok) {
    std::cerr << "orgctl secrets: " << result.error << "\n";
    return std::nullopt;
  }
  if (key.public_key().size() != crypto_box_PUBLICKEYBYTES) {
    std::cerr << "orgctl secrets: orgd's vault key is not an X25519 public key\n";
    return std::nullopt;
  }
  return key.public_key();
}

ExitCode SecretsCommands::seal_passphrase(Client& client, const std::string& what,
                                         std::string& sealed) {
  auto pass = passphrase();
  if (!pass) {
    print_error(what, pass.error());
    return ExitCode::failed;
  }
  if (pass.value().empty()) return ExitCode::ok;  // under the master key
  const auto key = vault_key(client);
  if (!key) return ExitCode::unreachable;
  auto result = seal_to(*key, pass.value());
  if (!result) {
    print_error(what, result.error());
    return ExitCode::failed;
  }
  sealed = std::move(result.value());
  return ExitCode::ok;
}

Result<Secret> SecretsCommands::passphrase() const {
  if (passphrase_env_.empty()) return Secret{};
  const char* value = std::getenv(passphrase_env_.c_str());
  if (value == nullptr || *value == '\0') {
    return not_found("environment variable " + passphrase_env_ + " is not set");
  }
  return Secret::from(value);
}

ExitCode SecretsCommands::run_import(Client& client, bool json) {
  auto text = read_file_bytes(file_, secrets::kMaxDotenvBytes);
  if (!text) {
    print_error("import", text.error());
    return ExitCode::failed;
  }
  const Secret contents = Secret::take(std::move(text.value()));
  auto parsed = secrets::parse_dotenv(contents.expose(), file_);
  if (!parsed) {
    print_error("import", parsed.error());
    return ExitCode::failed;
  }
  for (const auto& warning : parsed.value().warnings) {
    std::cerr << "orgctl secrets import: " << warning.message << "\n";
  }
  const auto key = vault_key(client);
  if (!key) return ExitCode::unreachable;
  v1::SecretSetRequest request;
  request.set_scope(scope_);
  request.set_actor(actor());
  request.set_request_id(random_request_id());
  request.set_sync(!no_sync_);
  if (parsed.value().entries.empty()) {
    std::cerr << "orgctl secrets import: " << file_ << " has no values\n";
    return ExitCode::failed;
  }
  for (const auto& entry : parsed.value().entries) {
    auto sealed = seal_to(*key, entry.value);
    if (!sealed) {
      print_error("import", sealed.error());
      return ExitCode::failed;
    }
    auto* item = request.add_secrets();
    item->set_name(entry.key);
    item->set_sealed_value(sealed.value());
  }
  v1::SecretSetReply reply;
  const auto code = client.call("secrets.set", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  int changed = 0;
  for (const auto& w : reply.written()) changed += w.changed() ? 1 : 0;
  std::printf("imported %d secrets into %s (%d changed)\n", reply.written_size(), scope_.c_str(),
              changed);
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_set(Client& client, bool json) {
  Result<Secret> value = Secret{};
  if (!value_file_.empty()) {
    std::ifstream in(value_file_, std::ios::binary);
    if (!in) {
      std::cerr << "orgctl secrets set: cannot open " << value_file_ << "\n";
      return ExitCode::failed;
    }
    value = read_value(in, kMaxValueBytes);
  } else if (::isatty(STDIN_FILENO)) {
    value = prompt_value(fmt::format("value of {} ({}): ", name_, scope_));
  } else {
    value = read_value(std::cin, kMaxValueBytes);
  }
  if (!value) {
    print_error("set", value.error());
    return ExitCode::failed;
  }
  if (value.value().empty()) {
    std::cerr << "orgctl secrets set: the value is empty\n";
    return ExitCode::failed;
  }
  const auto key = vault_key(client);
  if (!key) return ExitCode::unreachable;
  auto sealed = seal_to(*key, value.value());
  if (!sealed) {
    print_error("set", sealed.error());
    return ExitCode::failed;
  }
  v1::SecretSetRequest request;
  request.set_scope(scope_);
  request.set_actor(actor());
  request.set_request_id(random_request_id());
  request.set_sync(!no_sync_);
  auto* item = request.add_secrets();
  item->set_name(name_);
  item->set_sealed_value(sealed.value());
  v1::SecretSetReply reply;
  const auto code = client.call("secrets.set", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  for (const auto& w : reply.written()) {
    std::printf("%s/%s version %lld%s\n", w.scope().c_str(), w.name().c_str(),
                static_cast<long long>(w.version()), w.changed() ? "" : " (unchanged)");
  }
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_list(Client& client, bool json) {
  v1::SecretListRequest request;
  for (const auto& scope : repos_) request.add_scopes(scope);
  v1::SecretList reply;
  const auto code = client.call("secrets.list", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  const auto now = std::chrono::system_clock::now();
  std::printf("%-32s %-16s %-8s %-8s %-8s %s\n", "NAME", "SCOPE", "VERSION", "AGE", "SOURCE",
              "TARGETS");
  for (const auto& s : reply.secrets()) {
    std::string targets;
    for (const auto& t : s.targets()) {
      if (!targets.empty()) targets += "  ";
      targets += t.target() + "=" + t.state();
    }
    std::printf("%-32s %-16s %-8lld %-8s %-8s %s%s\n", s.name().c_str(), s.scope().c_str(),
                static_cast<long long>(s.version()), format_time(s.updated_at(), now).c_str(),
                s.source().c_str(), targets.empty() ? "-" : targets.c_str(),
                s.rotating() ? "  (rotating)" : "");
  }
  for (const auto& missing : reply.missing()) std::printf("missing: %s\n", missing.c_str());
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_sync(Client& client, bool json, bool diff_only) {
  v1::SecretSyncRequest request;
  for (const auto& repo : repos_) request.add_repos(repo);
  for (const auto& name : names_) request.add_names(name);
  request.set_all(repos_.empty());
  request.set_dry_run(diff_only || dry_run_);
  request.set_request_id(random_request_id());
  request.set_actor(actor());
  v1::SecretSyncReport reply;
  const auto code = client.call("secrets.sync", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  print_sync_report(reply, diff_only);
  return reply.failed() == 0 ? ExitCode::ok : ExitCode::failed;
}

ExitCode SecretsCommands::run_rotate(Client& client, bool json) {
  v1::SecretRotateRequest request;
  request.set_name(name_);
  if (rotate_->count("--scope") > 0) request.set_scope(scope_);
  request.set_reason(reason_);
  request.set_request_id(random_request_id());
  request.set_actor(actor());
  v1::SecretRotateReport reply;
  const auto code = client.call("secrets.rotate", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  std::printf("rotation %s of %s/%s: %s (version %lld)\n", reply.rotation_id().c_str(),
              reply.scope().c_str(), reply.name().c_str(), reply.phase().c_str(),
              static_cast<long long>(reply.version()));
  for (const auto& target : reply.behind()) std::printf("behind: %s\n", target.c_str());
  if (!reply.error().empty()) std::printf("error: %s\n", reply.error().c_str());
  return reply.phase() == "failed" ? ExitCode::failed : ExitCode::ok;
}

ExitCode SecretsCommands::run_backup(Client& client, bool json) {
  std::string sealed_passphrase;
  if (out_.empty() && !to_r2_) {
    std::cerr << "orgctl secrets backup: give --out FILE or --to-r2\n";
    return ExitCode::usage;
  }
  if (const auto code = seal_passphrase(client, "backup", sealed_passphrase); code != ExitCode::ok) {
    return code;
  }
  v1::SecretBackupRequest request;
  request.set_actor(actor());
  request.set_sealed_passphrase(sealed_passphrase);
  request.set_to_store(to_r2_);
  v1::SecretBackupReply reply;
  const CallResult result = client.call_quietly("secrets.backup", request, reply);
  if (result.code != ExitCode::ok) {
    std::cerr << "orgctl secrets backup: " << result.error << "\n";
    return result.code;
  }
  if (to_r2_) {
    if (json) {
      std::printf("{\"store\":\"%s\",\"key\":\"%s\",\"secrets\":%lld}\n", reply.store().c_str(),
                  reply.store_key().c_str(), static_cast<long long>(reply.secrets()));
    } else {
      std::printf("wrote r2://%s to %s: %lld secrets\n", reply.store_key().c_str(),
                  reply.store().c_str(), static_cast<long long>(reply.secrets()));
    }
    return ExitCode::ok;
  }
  // Written beside the target and renamed, mode 600 from the start: never a half file.
  const std::string temp = out_ + ".tmp";
  {
    const mode_t old = ::umask(077);
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    ::umask(old);
    out.write(reply.backup().data(), static_cast<std::streamsize>(reply.backup().size()));
    out.close();
    if (!out) {
      std::cerr << "orgctl secrets backup: cannot write " << temp << "\n";
      std::remove(temp.c_str());
      return ExitCode::failed;
    }
  }
  if (std::rename(temp.c_str(), out_.c_str()) != 0) {
    std::cerr << "orgctl secrets backup: cannot rename " << temp << " to " << out_ << "\n";
    std::remove(temp.c_str());
    return ExitCode::failed;
  }
  if (json) {
    std::printf("{\"file\":\"%s\",\"secrets\":%lld,\"bytes\":%zu}\n", out_.c_str(),
                static_cast<long long>(reply.secrets()), reply.backup().size());
  } else {
    std::printf("wrote %s: %lld secrets, %zu bytes\n", out_.c_str(),
                static_cast<long long>(reply.secrets()), reply.backup().size());
  }
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_restore(Client& client, bool json) {
  static constexpr std::string_view kScheme = "r2://";
  std::string store_key = from_r2_;
  if (file_.rfind(kScheme, 0) == 0) store_key = file_.substr(kScheme.size());
  if (store_key.empty() && file_.empty()) {
    std::cerr << "orgctl secrets restore: name a backup file, r2://KEY or --from-r2 KEY\n";
    return ExitCode::usage;
  }
  std::string backup;
  if (store_key.empty()) {
    auto bytes = read_file_bytes(file_, kMaxBackupBytes);
    if (!bytes) {
      print_error("restore", bytes.error());
      return ExitCode::failed;
    }
    backup = std::move(bytes.value());
  }
  std::string sealed_passphrase;
  if (const auto code = seal_passphrase(client, "restore", sealed_passphrase); code != ExitCode::ok) {
    return code;
  }
  v1::SecretRestoreRequest request;
  request.set_backup(std::move(backup));
  request.set_store_key(store_key);
  request.set_actor(actor());
  request.set_request_id(random_request_id());
  request.set_sealed_passphrase(sealed_passphrase);
  v1::SecretRestoreReply reply;
  const auto code = client.call("secrets.restore", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  std::printf("restored %lld secrets (%lld unchanged)\n", static_cast<long long>(reply.restored()),
              static_cast<long long>(reply.unchanged()));
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_backups(Client& client, bool json) {
  v1::SecretBackupRequest request;
  request.set_actor(actor());
  request.set_list_store(true);
  v1::SecretBackupReply reply;
  const auto code = client.call("secrets.backup", request, reply, json);
  if (code != ExitCode::ok || json) return code;
  const auto now = std::chrono::system_clock::now();
  std::printf("%s: %d backups\n", reply.store().c_str(), reply.stored_size());
  if (reply.stored_size() == 0) return ExitCode::ok;
  std::printf("%-40s %10s %s\n", "KEY", "BYTES", "AGE");
  for (const auto& b : reply.stored()) {
    std::printf("%-40s %10lld %s\n", ("r2://" + b.key()).c_str(), static_cast<long long>(b.size()),
                format_time(b.modified(), now).c_str());
  }
  return ExitCode::ok;
}

ExitCode SecretsCommands::run_test(Client& client, bool json) {
  v1::ProvidersRequest request;
  request.set_probe_now(true);
  v1::ProviderList reply;
  const auto code = client.call("providers", request, reply, json);
  if (code != ExitCode::ok) return code;
  bool all_ok = true;
  for (const auto& p : reply.providers()) {
    if (!p.probed()) {
      if (!json) std::printf("%-20s %-10s no credentials to check\n", p.name().c_str(), p.type().c_str());
      continue;
    }
    all_ok = all_ok && p.ok();
    if (!json) {
      std::printf("%-20s %-10s %s  %s\n", p.name().c_str(), p.type().c_str(),
                  p.ok() ? "ok" : "FAILED", p.detail().c_str());
    }
  }
  return all_ok ? ExitCode::ok : ExitCode::failed;
}

}  // namespace orgd::cli
