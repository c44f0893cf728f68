// Result files of the CLI commands.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace smyrf::cli {

// Writes (path, text) pairs, skipping empty paths. Each file is written in full to PATH.tmp
// first and renamed only once every file is written, so a failed run leaves no partial (or
// half-updated) output behind.
void write_files(const std::vector<std::pair<std::string, std::string>>& files);

// A JSON array of flat objects as CSV (columns from the first row, in its order).
std::string to_csv(const nlohmann::ordered_json& rows);

}  // namespace smyrf::cli
