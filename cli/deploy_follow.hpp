#pragma once

#include <string>

#include "cli/client.hpp"
#include "cli/deploy_view.hpp"

namespace orgd::cli {

struct FollowOptions {
  // Print the final DeployRecord as JSON instead of progress.
  bool json = false;
  // Redraw one line per repo in place (stdout is a terminal); otherwise one line per event.
  bool live = false;
};

// Follows a deploy until it ends: subscribes to P.events.deploy.<id>.>, then reads the record
// once to catch up on what happened before the subscription, then applies events as they come,
// re-reading the record every couple of seconds in case events were lost. Ctrl-C stops following
// (the deploy goes on) and says how to follow again or cancel. Returns the exit code for the
// final state: 0 succeeded, 1 failed/cancelled/rolled_back, 3 when orgd stops answering, 130 on
// Ctrl-C.
ExitCode follow_deploy(Client& client, DeployProgress& progress, const FollowOptions& options);

// P.api.deploy.get page after page: the whole record, every step, as one reply used to be.
CallResult get_whole_deploy(Client& client, const std::string& deploy_id,
                            v1::DeployRecord& record);

}  // namespace orgd::cli
