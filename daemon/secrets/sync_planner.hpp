#pragma once

// The plan of a sync for one target, as a pure function of what is desired (names and keyed
// digests of their values), what orgd_sync says was pushed, and the target's one listing. No
// values go in or come out: a plan is what a dry run returns. docs/secret-sync.md explains each
// rule.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/plugin/provider.hpp"
#include "daemon/secrets/sync_state.hpp"

namespace orgd::secrets {

enum class SyncAction { none, put, remove };

enum class SyncReason {
  in_sync,            // none: the record, the value and the target agree
  new_secret,         // put: orgd never pushed it here (no record)
  changed,            // put: the value differs from the one last pushed
  missing,            // put: pushed before, now gone from the target (deleted behind orgd)
  drifted,            // put: the target shows a change after orgd's push
  unmanaged,          // at the target, never put there by orgd: kept, or removed with prune
  no_longer_desired,  // remove: orgd put it there, it is no longer in the config
};

std::string_view action_name(SyncAction action);
std::string_view reason_name(SyncReason reason);  // new, changed, missing, drifted, ...

struct PlanEntry {
  std::string name;
  SyncAction action = SyncAction::none;
  SyncReason reason = SyncReason::in_sync;
  // The name as the target lists it when it does (GitHub upper-cases names); remove uses it.
  std::optional<std::string> listed_name;
  // none with a record that has no target time yet: the listing's time, to be written to the
  // record (a KV write, no call to the target) so later drift is measured from it.
  std::optional<Clock::time_point> adopt_updated_at;
};

struct TargetPlan {
  std::string target_id;
  std::string target;              // describe()
  std::vector<PlanEntry> entries;  // desired names in the given order, then removals, unmanaged

  std::size_t count(SyncAction action) const;
};

struct DesiredDigest {
  std::string name;
  std::string digest;  // secret_digest() of the desired value at this target
};

// How far a target's clock may run ahead of orgd's when a record has no target time to compare
// with (the listing after the push failed): a change shown later than the push plus this is
// drift.
inline constexpr std::chrono::seconds kTargetClockSlack{120};

// `listing` is the target's list() of this sync. Names are matched exactly, else ignoring ASCII
// case (a target that upper-cases names, as GitHub does, still matches).
TargetPlan plan_target(const std::string& target_id, const std::string& target, bool prune,
                       const std::vector<DesiredDigest>& desired, const TargetRecords& records,
                       const std::vector<SecretInfo>& listing);

}  // namespace orgd::secrets
