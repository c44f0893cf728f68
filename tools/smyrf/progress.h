// A progress bar on stderr for long sweeps: redrawn in place on a terminal, about ten lines in
// all otherwise (CI logs), silent with --quiet.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>

namespace smyrf::cli {

class Progress {
 public:
  Progress(std::size_t total, bool quiet) : total_(total), quiet_(quiet), tty_(isatty(2) != 0) {}
  // Erases the bar so that a table row printed next starts on a clean line.
  void clear() {
    if (!quiet_ && tty_) std::fprintf(stderr, "\r\033[K");
  }
  // Names the step about to run: a single step (the reference at 4096, dense at 16384) can take
  // seconds, and the bar should say what it is waiting for.
  void begin(const std::string& what) {
    if (!quiet_ && tty_) draw(what + " ...");
  }
  void step(const std::string& what) {
    ++done_;
    if (quiet_) return;
    const std::size_t every = total_ >= 10 ? total_ / 10 : 1;
    if (!tty_ && done_ % every != 0 && done_ != total_) return;
    draw(what);
    if (tty_ && done_ == total_) std::fprintf(stderr, "\n");
  }

 private:
  void draw(const std::string& what) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done_ / (total_ == 0 ? 1 : total_));
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "%s[%s] %zu/%zu %s%s", tty_ ? "\r\033[K" : "", bar.c_str(), done_, total_,
                 what.c_str(), tty_ ? "" : "\n");
    std::fflush(stderr);
  }

  std::size_t total_, done_ = 0;
  bool quiet_, tty_;
};

// Runs fn(i) for i in [0, n) on `threads` OpenMP threads, in blocks of 64 items (a progress
// step per item after each block); the first exception is rethrown here.
template <class Fn>
void parallel_items(std::size_t n, int threads, Progress* progress, const std::string& what, Fn&& fn) {
  std::exception_ptr error;
  std::mutex mu;
  const std::size_t block = 64;
  for (std::size_t b0 = 0; b0 < n; b0 += block) {
    const auto b1 = std::min(n, b0 + block);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::int64_t i = static_cast<std::int64_t>(b0); i < static_cast<std::int64_t>(b1); ++i) {
      try {
        fn(static_cast<std::size_t>(i));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    if (progress)
      for (std::size_t i = b0; i < b1; ++i) progress->step(what);
  }
}

}  // namespace smyrf::cli
