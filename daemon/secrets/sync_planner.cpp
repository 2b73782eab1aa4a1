#include "daemon/secrets/sync_planner.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "daemon/core/ascii.hpp"

namespace orgd::secrets {
namespace {

// The listing by name, matched exactly first, else ignoring ASCII case; each listed secret is
// matched once at most, so what is left over is unmanaged.
class ListingIndex {
 public:
  explicit ListingIndex(const std::vector<SecretInfo>& listing) : listing_(listing) {
    for (std::size_t i = 0; i < listing.size(); ++i) {
      exact_.emplace(listing[i].name, i);
      folded_.emplace(ascii_lowered(listing[i].name), i);
    }
  }

  const SecretInfo* match(const std::string& name) {
    if (auto it = exact_.find(name); it != exact_.end() && !used_.count(it->second)) {
      used_.insert(it->second);
      return &listing_[it->second];
    }
    auto [first, last] = folded_.equal_range(ascii_lowered(name));
    for (auto it = first; it != last; ++it) {
      if (!used_.count(it->second)) {
        used_.insert(it->second);
        return &listing_[it->second];
      }
    }
    return nullptr;
  }

  std::vector<const SecretInfo*> unmatched() const {
    std::vector<const SecretInfo*> out;
    for (std::size_t i = 0; i < listing_.size(); ++i) {
      if (!used_.count(i)) out.push_back(&listing_[i]);
    }
    return out;
  }

 private:
  const std::vector<SecretInfo>& listing_;
  std::map<std::string, std::size_t> exact_;
  std::multimap<std::string, std::size_t> folded_;
  std::set<std::size_t> used_;
};

PlanEntry entry(const std::string& name, SyncAction action, SyncReason reason,
                const SecretInfo* listed) {
  PlanEntry e;
  e.name = name;
  e.action = action;
  e.reason = reason;
  if (listed != nullptr) e.listed_name = listed->name;
  return e;
}

}  // namespace

std::string_view action_name(SyncAction action) {
  switch (action) {
    case SyncAction::none:
      return "none";
    case SyncAction::put:
      return "put";
    case SyncAction::remove:
      return "remove";
  }
  return "none";
}

std::string_view reason_name(SyncReason reason) {
  switch (reason) {
    case SyncReason::in_sync:
      return "in_sync";
    case SyncReason::new_secret:
      return "new";
    case SyncReason::changed:
      return "changed";
    case SyncReason::missing:
      return "missing";
    case SyncReason::drifted:
      return "drifted";
    case SyncReason::unmanaged:
      return "unmanaged";
    case SyncReason::no_longer_desired:
      return "no_longer_desired";
  }
  return "in_sync";
}

std::size_t TargetPlan::count(SyncAction action) const {
  return static_cast<std::size_t>(std::count_if(
      entries.begin(), entries.end(), [action](const PlanEntry& e) { return e.action == action; }));
}

TargetPlan plan_target(const std::string& target_id, const std::string& target, bool prune,
                       const std::vector<DesiredDigest>& desired, const TargetRecords& records,
                       const std::vector<SecretInfo>& listing) {
  TargetPlan plan;
  plan.target_id = target_id;
  plan.target = target;
  ListingIndex listed(listing);
  std::set<std::string> wanted;

  for (const auto& d : desired) {
    if (!wanted.insert(d.name).second) continue;  // a name twice: planned once
    const SecretInfo* at_target = listed.match(d.name);
    auto rec = records.find(d.name);
    if (rec == records.end()) {
      plan.entries.push_back(entry(d.name, SyncAction::put, SyncReason::new_secret, at_target));
      continue;
    }
    const SyncRecord& r = rec->second.record;
    if (r.digest != d.digest) {
      plan.entries.push_back(entry(d.name, SyncAction::put, SyncReason::changed, at_target));
      continue;
    }
    if (at_target == nullptr) {
      plan.entries.push_back(entry(d.name, SyncAction::put, SyncReason::missing, nullptr));
      continue;
    }
    // Changed behind orgd's back: the target's time moved past the one seen after the push (or,
    // with none seen, past the push itself by more than the clocks may disagree).
    if (at_target->updated_at) {
      const bool drifted = r.target_updated_at
                               ? *at_target->updated_at > *r.target_updated_at
                               : *at_target->updated_at > r.pushed_at + kTargetClockSlack;
      if (drifted) {
        plan.entries.push_back(entry(d.name, SyncAction::put, SyncReason::drifted, at_target));
        continue;
      }
    }
    PlanEntry e = entry(d.name, SyncAction::none, SyncReason::in_sync, at_target);
    if (!r.target_updated_at && at_target->updated_at) e.adopt_updated_at = at_target->updated_at;
    plan.entries.push_back(std::move(e));
  }

  // Put there by orgd and no longer wanted: removed from the target (where it still is) and
  // from orgd_sync.
  for (const auto& [name, rec] : records) {
    if (wanted.count(name)) continue;
    const SecretInfo* at_target = listed.match(name);
    plan.entries.push_back(
        entry(name, SyncAction::remove, SyncReason::no_longer_desired, at_target));
  }

  for (const SecretInfo* other : listed.unmatched()) {
    plan.entries.push_back(entry(other->name, prune ? SyncAction::remove : SyncAction::none,
                                 SyncReason::unmanaged, other));
  }
  return plan;
}

}  // namespace orgd::secrets
