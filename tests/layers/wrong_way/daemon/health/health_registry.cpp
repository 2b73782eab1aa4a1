#include "daemon/core/clock.hpp"
#include "daemon/deploy/planner.hpp"
