#pragma once

// The JavaScript example remote provider (deploy/examples/remote-provider) as end-to-end tests
// run it: node from PATH and the example's installed node_modules.

#include <filesystem>
#include <string>

namespace orgd::testing {

// The example's folder in the source tree.
std::filesystem::path remote_example_dir();
// node on PATH, or "".
std::string find_node();
// Why the example cannot run here ("" when it can): what a test's GTEST_SKIP says.
std::string remote_example_missing();

}  // namespace orgd::testing
