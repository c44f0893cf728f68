#include "output.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace smyrf::cli {

void write_files(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::pair<std::string, std::string>> written;  // (tmp, final)
  for (const auto& [path, text] : files) {
    if (path.empty()) continue;
    const std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    const std::string tmp = path + ".tmp";
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    f.close();
    if (!f) {
      for (const auto& w : written) std::filesystem::remove(w.first);
      std::filesystem::remove(tmp);
      throw std::runtime_error("cannot write " + tmp);
    }
    written.emplace_back(tmp, path);
  }
  for (const auto& [tmp, path] : written) std::filesystem::rename(tmp, path);
}

std::string to_csv(const nlohmann::ordered_json& rows) {
  std::ostringstream out;
  if (rows.empty()) return "";
  bool first = true;
  for (const auto& [key, value] : rows.front().items()) {
    out << (first ? "" : ",") << key;
    first = false;
  }
  out << "\n";
  for (const auto& row : rows) {
    first = true;
    for (const auto& [key, value] : row.items()) {
      out << (first ? "" : ",");
      first = false;
      if (value.is_string()) {
        const std::string v = value.get<std::string>();
        if (v.find_first_of(",\"\n") == std::string::npos) {
          out << v;
        } else {  // RFC 4180 quoting
          out << '"';
          for (char c : v) out << (c == '"' ? "\"\"" : std::string(1, c));
          out << '"';
        }
      }
      else if (!value.is_null())
        out << value.dump();
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace smyrf::cli
