// Result files of the CLI commands.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace smyrf::cli {

// Checks (option, path) pairs before any work, skipping empty paths, so that a run that could
// not save its results fails at once rather than after minutes of computing: creates missing
// parent folders (the scripts write to out/), tries to create a file in the folder, and refuses
// two options naming one file. Throws std::runtime_error naming the option, the path and the
// reason.
void check_output_paths(const std::vector<std::pair<std::string, std::string>>& options);

// Writes (path, text) pairs, skipping empty paths. Each file is written in full to a temporary
// file in its own folder first and renamed only once every file is written, so a failed run
// leaves no partial (or half-updated) output behind.
void write_files(const std::vector<std::pair<std::string, std::string>>& files);

// A JSON array of flat objects as CSV (columns from the first row, in its order).
std::string to_csv(const nlohmann::ordered_json& rows);

}  // namespace smyrf::cli
