#pragma once

#include "daemon/core/clock.hpp"
