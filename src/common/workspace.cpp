#include "common/workspace.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace smyrf {

std::byte* Workspace::Impl::reserve(std::size_t bytes) {
  if (bytes <= capacity && data != nullptr) return data;
  std::free(data);
  data = nullptr;
  capacity = 0;
  const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
  data = static_cast<std::byte*>(std::aligned_alloc(64, rounded == 0 ? 4096 : rounded));
  if (data == nullptr) throw std::bad_alloc();
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
