// A lower bound on the time SMYRF's rounds need on this machine, from its measured memory
// bandwidth, whatever the kernels.
//
// Every round of SMYRF must bring each q, k and v row into the round's cluster order: rows are
// visited in hash order, which is a random order of positions. Any implementation either reads
// the rows in that order (measured here: random-row read bandwidth) or first permutes them with
// sequential passes (at least one read and one write of every row: measured here as streaming
// read bandwidth, counting the write as cheap as a read). So per round it moves at least
// B = 3 * N * d * 4 bytes at the better of the two rates, and n_hashes rounds take at least
// n_hashes * min(B / random_rate, 2 B / streaming_rate). Outputs, hashing and sorting are left
// out: the bound only gets lower, so it stays a bound.
#pragma once

#include <cstdint>

namespace smyrf::cli {

struct MovementBound {
  double stream_gbs = 0;       // sequential read of q, k, v
  double random_rows_gbs = 0;  // q, k, v rows read in a random order of positions
  double seconds = 0;          // lower bound on n_hashes rounds
};

// q, k, v: N rows of d floats each (contiguous). Uses `threads` threads; best of a few passes.
MovementBound smyrf_movement_bound(const float* q, const float* k, const float* v, std::int64_t n,
                                   std::int64_t d, int rounds, int threads);

}  // namespace smyrf::cli
