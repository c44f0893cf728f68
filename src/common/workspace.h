// Scratch memory for one call: a plan of typed regions, carved from one reusable buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf {

struct Workspace::Impl {
  // Returns a 64-byte aligned buffer of at least `bytes`, reusing the previous one when it is
  // large enough. A new buffer is touched once so that its pages are faulted in here rather
  // than inside the timed kernels.
  std::byte* reserve(std::size_t bytes);
  std::byte* data = nullptr;
  std::size_t capacity = 0;
  ~Impl();
};

namespace detail {

// Two-pass layout: add() the regions (offsets are 64-byte aligned), then bind() to a buffer.
class Arena {
 public:
  // Sizes that would overflow saturate at kHuge, which Workspace refuses (out-of-memory error)
  // before anything is bound.
  static constexpr std::size_t kHuge = std::numeric_limits<std::size_t>::max() / 4;
  template <class T>
  std::size_t add(std::size_t count) {
    const std::size_t offset = size_;
    if (count > kHuge / sizeof(T) || size_ >= kHuge - count * sizeof(T) - 64) {
      size_ = kHuge;
      return offset;
    }
    size_ += (count * sizeof(T) + 63) / 64 * 64;
    return offset;
  }
  std::size_t bytes() const { return size_; }
  void bind(std::byte* base) { base_ = base; }
  template <class T>
  T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }

 private:
  std::size_t size_ = 0;
  std::byte* base_ = nullptr;
};

// Binds `arena` to scratch memory: the caller's workspace when given, else `local`.
std::byte* bind_scratch(Arena& arena, Workspace* workspace, Workspace& local);

}  // namespace detail
}  // namespace smyrf
