#include "common/workspace.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <string>

namespace smyrf {

namespace {

double gib(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

// A workspace larger than the machine's memory cannot be used (the allocation might still
// succeed under overcommit and the process be killed while touching it): an error instead.
[[noreturn]] void out_of_memory(std::size_t bytes, const char* why) {
  std::ostringstream s;
  s.precision(3);
  s << "smyrf: out of memory: this call needs a workspace of " << gib(bytes) << " GiB, " << why
    << " (the sizes or the method's config ask for too much; see the method's memory in smyrf.h)";
  throw Error(s.str());
}

}  // namespace

std::byte* Workspace::Impl::reserve(std::size_t bytes) {
  if (bytes <= capacity && data != nullptr) return data;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 && bytes / static_cast<std::size_t>(page) >= static_cast<std::size_t>(pages)) {
    std::ostringstream why;
    why.precision(3);
    why << "more than this machine's " << gib(static_cast<std::size_t>(pages) * static_cast<std::size_t>(page))
        << " GiB of memory";
    out_of_memory(bytes, why.str().c_str());
  }
  std::free(data);
  data = nullptr;
  capacity = 0;
  const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
  data = static_cast<std::byte*>(std::aligned_alloc(64, rounded == 0 ? 4096 : rounded));
  if (data == nullptr) out_of_memory(bytes, "which could not be allocated");
  std::memset(data, 0, rounded);
  capacity = rounded;
  return data;
}

Workspace::Impl::~Impl() { std::free(data); }

Workspace::Workspace() : impl_(std::make_unique<Impl>()) {}
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;
std::size_t Workspace::capacity_bytes() const { return impl_ ? impl_->capacity : 0; }

namespace detail {
std::byte* bind_scratch(Arena& arena, Workspace* workspace, Workspace& local) {
  Workspace& ws = workspace != nullptr ? *workspace : local;
  std::byte* base = ws.impl()->reserve(arena.bytes());
  arena.bind(base);
  return base;
}
}  // namespace detail
}  // namespace smyrf
