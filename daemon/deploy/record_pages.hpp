#pragma once

// What the deploy API answers for a record: the record with one page of its steps, so a deploy
// of thousands of repos never makes a reply over the connection's max_payload.

#include "daemon/core/errors.hpp"
#include "orgd/v1/deploy.pb.h"

namespace orgd::deploy {

// Steps each record of P.api.deploy.list carries (the rest through P.api.deploy.get).
inline constexpr int kListedSteps = 10;

// The page of `record`'s steps that `request` asks for (page_size, cursor, states), with
// next_cursor and total_steps set. invalid_argument for a bad page size or cursor.
Result<v1::DeployRecord> record_page(v1::DeployRecord record, const v1::DeployGetRequest& request);

// `record` with its first kListedSteps steps and total_steps, for a list.
void trim_for_list(v1::DeployRecord& record);

}  // namespace orgd::deploy
