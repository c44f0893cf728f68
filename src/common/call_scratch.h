// The scratch memory of one call, the same way in every method: plan typed regions of one
// Arena (the active-query and visible-key lists first, unless asked not to), bind it to the
// caller's Workspace (or to one owned here for the call), fill the token lists. Sizes are
// reported as RunInfo::workspace_bytes = bytes().
//
//     CallScratch scratch(pr, workspace);
//     const std::size_t kt = scratch.arena().add<float>(n);   // plan
//     const TokenLists& lists = scratch.bind();                // bind, fill the lists
//     float* kt_rows = scratch.arena().at<float>(kt);
#pragma once

#include <cstddef>

#include "common/problem.h"
#include "common/workspace.h"

namespace smyrf::detail {

class CallScratch {
 public:
  enum class Lists { plan, none };
  CallScratch(const Problem& pr, Workspace* workspace, Lists lists = Lists::plan)
      : pr_(&pr), workspace_(workspace), with_lists_(lists == Lists::plan) {
    if (with_lists_) slots_ = plan_token_lists(arena_, pr);
  }
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;

  // The plan (add<T>(count) before bind(), at<T>(offset) after).
  Arena& arena() { return arena_; }
  const Arena& arena() const { return arena_; }
  std::size_t bytes() const { return arena_.bytes(); }

  // Reserves the memory (the workspace's buffer when large enough) and fills the token lists.
  const TokenLists& bind() {
    bind_scratch(arena_, workspace_, local_);
    if (with_lists_) lists_ = fill_token_lists(arena_, slots_, *pr_);
    return lists_;
  }
  // bind(), then zeros of masked queries' rows and of batch elements without a visible key.
  const TokenLists& bind_and_zero_unattended() {
    bind();
    zero_unattended_rows(*pr_, lists_);
    return lists_;
  }
  const TokenLists& lists() const { return lists_; }

 private:
  const Problem* pr_;
  Workspace* workspace_;
  bool with_lists_;
  Arena arena_;
  TokenListSlots slots_{};
  Workspace local_;
  TokenLists lists_{};
};

}  // namespace smyrf::detail
