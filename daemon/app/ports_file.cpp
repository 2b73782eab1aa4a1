#include "daemon/app/ports_file.hpp"

#include <nlohmann/json.hpp>

#include "daemon/core/state_files.hpp"

namespace orgd {

Result<Ok> write_ports_file(const std::filesystem::path& path, const BoundPorts& ports) {
  nlohmann::json j = {{"http", nullptr}, {"nats", ports.nats}};
  if (ports.http != 0) j["http"] = ports.http;
  // Absolute, so a bare file name has a parent directory to create and rename within.
  return write_file_atomically(std::filesystem::absolute(path), j.dump() + "\n");
}

}  // namespace orgd
