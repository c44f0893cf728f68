// smyrf/methods/reformer.h: ReformerConfig, Reformer LSH attention, and its exact definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

namespace smyrf {

// Reformer LSH attention (Kitaev et al., ICLR 2020). Per (batch, head) and round r: random
// rotation R_r [d, n_buckets/2] with N(0, 1) entries, a function of (seed, head, round) only
// (the same for every batch element): with n = n_buckets / 2,
//   R_r[t][c] = standard_normal(seed, stream, t * n + c)   (seeded draws, smyrf.h)
//   stream    = 0x5245465200000000 + head * 1024 + r        (tag "REFR"; r < 1024).
// Bucket h(x) = argmax over [xR_r; -xR_r] (first maximum on ties), exactly: x is the token's row
// as given (bf16 converted to f32 exactly), in double; y_c = fma chain over t = 0..d-1 in index
// order (y_c = fma(x[t], R_r[t][c], y_c), from y_c = 0); the candidates are v_c = y_c and
// v_{n+c} = -y_c for c < n, scanned in index order from bucket 0, a later candidate replacing
// the best only when strictly larger (double comparison; a zero row gets bucket 0).
// With shared_qk the keys are the queries normalised to unit length (k_j = q_j / |q_j|, k_j = 0
// when q_j = 0; the K tensor is not read; Nq == Nk) and the hash is computed once per token,
// from its q row (the key's bucket is the query's); token j is a query iff query_mask allows it
// and a key iff key_mask allows it (its key is built from its q row even when its query is
// masked). Otherwise queries are hashed from Q and keys from K. The scale's sign is not used.
// Active queries and visible keys are each sorted by (bucket, position) and cut into C =
// ceil(max(n_q, n_k) / chunk_size) balanced chunks (n_q, n_k of the batch element; nothing
// when either is 0) by SMYRF's cluster rule with cluster size chunk_size on both sides: query
// chunk c = sorted queries [floor(c n_q / C), floor((c+1) n_q / C)), key chunk c = sorted keys
// [floor(c n_k / C), max(floor((c+1) n_k / C), floor(c n_k / C) + 1)). Query chunk c attends to
// the union, as a set, of key chunks c and (c - 1) mod C (chunk 0 to the last chunk,
// cyclically, as in the original; with C == 1 only to chunk 0, with C == 2 to every key once);
// a key in both chunks (C == 2, or overlapping chunks when n_k < C) is counted once.
// Causal: supported: key j only if j <= i + (Nk - Nq). Self-attention exclusion (shared_qk
// only), applied last: a query does not attend to its own position unless no other key of its
// set survives the masks and causality in that round (then it attends to itself alone, if its
// key is visible). Rounds are merged by logsumexp; lse is over the multiset of (round, key), so
// when C == 1 (every round the same set; computed once) lse = the set's logsumexp + log(n_hashes).
// Complexity O(n_hashes * N * (chunk_size + n_buckets / 2) * d). No learned parts.
//
// Capabilities.
//   causal:        supported (forward, dropout, backward): key j only if j <= i + Nk - Nq.
//   dropout:       yes, causal too: weight (b, h, round, i, j) with the round of the pair (with
//                  C == 1, one copy of the set per round).
//   backward:      attention_backward (f32, no broadcast strides): buckets, chunks and the self
//                  exclusion are constants of the gradient; with shared_qk the keys' gradient
//                  goes through k_j = q_j / |q_j| into dQ (dK is zero: K is not read).
//   attention_f64: attention_f64 and attention_backward_f64: the same (round, key) pairs, from
//                  the inputs rounded to f32, with the keys normalised in double (shared_qk).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks (with shared_qk a token's query and key roles are
//                  masked separately).
//   Nq != Nk:      with shared_qk = false; shared_qk = true refuses it: "smyrf:
//                  ReformerConfig.shared_qk = true: needs nq == nk (keys are the normalised
//                  queries), got nq = ..., nk = ...".
//   stride 0:      yes (with shared_qk the K tensor is not read; the finite scan checks the Q
//                  rows of the keys instead and names them params.q).
//   learned parts: none.
//   complexity:    O(n_hashes N (chunk_size + n_buckets / 2) d) time. Config checks (smyrf::Error
//                  naming the field): n_hashes in [1, 1024], n_buckets even in [2, 65536],
//                  chunk_size >= 1.
struct ReformerConfig {
  int n_hashes = 4;
  int n_buckets = 32;   // even, >= 2
  int chunk_size = 64;
  bool shared_qk = true;
};

}  // namespace smyrf
