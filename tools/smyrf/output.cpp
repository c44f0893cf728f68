#include "output.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace smyrf::cli {

namespace {

// The temporary file next to `path`: same folder, so that the final rename cannot cross file
// systems; the process id keeps two concurrent runs apart.
std::string temporary_for(const std::string& path) {
  return path + ".tmp" + std::to_string(::getpid());
}

void remove_quietly(const std::string& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

// Creates the parent folder of `path` if needed; returns "" or why it cannot.
std::string make_parent(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return "";
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return "cannot create folder " + parent.string() + ": " + ec.message();
  if (!std::filesystem::is_directory(parent, ec)) return parent.string() + " is not a folder";
  return "";
}

}  // namespace

void check_output_paths(const std::vector<std::pair<std::string, std::string>>& options) {
  for (std::size_t i = 0; i < options.size(); ++i) {
    const auto& [option, path] = options[i];
    if (path.empty()) continue;
    auto fail = [&](const std::string& why) {
      throw std::runtime_error(option + " " + path + ": " + why);
    };
    // Two results in one file: the second would silently replace the first.
    for (std::size_t j = 0; j < i; ++j)
      if (!options[j].second.empty() &&
          std::filesystem::path(options[j].second).lexically_normal() == std::filesystem::path(path).lexically_normal())
        fail("the same file as " + options[j].first);
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("is a folder, not a file");
    if (const std::string why = make_parent(path); !why.empty()) fail(why);
    const std::string probe = temporary_for(path);
    errno = 0;
    std::ofstream f(probe, std::ios::binary);
    const int error = errno;
    const bool ok = static_cast<bool>(f);
    f.close();
    remove_quietly(probe);
    if (!ok) fail(std::string("cannot create a file there: ") + (error ? std::strerror(error) : "unknown error"));
  }
}

void write_files(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::pair<std::string, std::string>> written;  // (tmp, final)
  auto discard = [&] {
    for (const auto& w : written) remove_quietly(w.first);
  };
  for (const auto& [path, text] : files) {
    if (path.empty()) continue;
    if (const std::string why = make_parent(path); !why.empty()) {
      discard();
      throw std::runtime_error("cannot write " + path + ": " + why);
    }
    const std::string tmp = temporary_for(path);
    errno = 0;
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    f.close();
    if (!f) {
      const int error = errno;
      discard();
      remove_quietly(tmp);
      throw std::runtime_error("cannot write " + path + ": " + (error ? std::strerror(error) : "write failed"));
    }
    written.emplace_back(tmp, path);
  }
  for (std::size_t i = 0; i < written.size(); ++i) {
    std::error_code ec;
    std::filesystem::rename(written[i].first, written[i].second, ec);
    if (ec) {
      for (std::size_t j = i; j < written.size(); ++j) remove_quietly(written[j].first);
      throw std::runtime_error("cannot write " + written[i].second + ": " + ec.message());
    }
  }
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
