#include "inputs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>

namespace smyrf::cli {
namespace {

template <class Vec>
void fill_normal(Vec& x, std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (float& v : x) v = n(rng);
}

// Rows of `x` ([rows, d]) become centre + noise * N(0, I) with a uniformly drawn centre.
void fill_mixture(Floats& x, std::int64_t d, const std::vector<float>& centers,
                  float noise, std::mt19937_64& rng) {
  const std::int64_t n_centers = static_cast<std::int64_t>(centers.size()) / d;
  std::uniform_int_distribution<std::int64_t> pick(0, n_centers - 1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (std::size_t row = 0; row < x.size() / static_cast<std::size_t>(d); ++row) {
    const float* c = centers.data() + pick(rng) * d;
    float* r = x.data() + row * static_cast<std::size_t>(d);
    for (std::int64_t t = 0; t < d; ++t) r[t] = c[t] + noise * n(rng);
  }
}

// B * H * rows * cols as a size, or an error naming the sizes when the product overflows (the
// sizes come from the command line; a wrapped product would allocate the wrong amount).
std::size_t elements(const char* what, std::int64_t B, std::int64_t H, std::int64_t rows, std::int64_t cols) {
  const std::int64_t dims[] = {B, H, rows, cols};
  std::int64_t n = 1;
  for (const std::int64_t x : dims) {
    if (x <= 0 || n > std::numeric_limits<std::int64_t>::max() / x)
      throw std::invalid_argument(std::string("inputs: ") + what + " of B=" + std::to_string(B) + " H=" +
                                  std::to_string(H) + " x " + std::to_string(rows) + " x " +
                                  std::to_string(cols) + ": sizes must be positive and their product " +
                                  "must fit in 64 bits");
    n *= x;
  }
  return static_cast<std::size_t>(n);
}

}  // namespace

float softmax_scale(const InputSpec& spec, std::int64_t d) {
  const double temperature = spec.kind == "clustered" ? spec.temperature : 1.0;
  const auto scale = static_cast<float>(1.0 / (std::sqrt(static_cast<double>(d)) * temperature));
  if (!std::isfinite(scale) || scale <= 0)
    throw std::invalid_argument("--temperature " + std::to_string(temperature) +
                                ": the softmax scale 1 / (sqrt(d) * temperature) is not a positive float32");
  return scale;
}

Tensors make_inputs(const InputSpec& spec, std::int64_t B, std::int64_t H, std::int64_t Nq,
                    std::int64_t Nk, std::int64_t d, std::int64_t dv, std::uint64_t seed) {
  Tensors t{B, H, Nq, Nk, d, dv, {}, {}, {}};
  t.q.resize(elements("Q", B, H, Nq, d));
  t.k.resize(elements("K", B, H, Nk, d));
  t.v.resize(elements("V", B, H, Nk, dv));
  std::mt19937_64 rng(seed);
  if (spec.kind == "gaussian") {
    fill_normal(t.q, rng);
    fill_normal(t.k, rng);
  } else if (spec.kind == "clustered") {
    const std::int64_t n_centers =
        spec.centers > 0 ? spec.centers : std::max<std::int64_t>(1, Nk / spec.keys_per_center);
    std::vector<float> centers(static_cast<std::size_t>(n_centers * d));
    fill_normal(centers, rng);
    const float s = spec.center_norm / std::sqrt(static_cast<float>(d));
    for (float& c : centers) c *= s;
    fill_mixture(t.q, d, centers, spec.noise, rng);
    fill_mixture(t.k, d, centers, spec.noise, rng);
  } else {
    throw std::invalid_argument("unknown input kind '" + spec.kind +
                                "' (valid: gaussian, clustered)");
  }
  fill_normal(t.v, rng);
  // Large --center-norm or --noise values overflow float32 in the sums above.
  for (const Floats* x : {&t.q, &t.k})
    for (const float f : *x)
      if (!std::isfinite(f))
        throw std::invalid_argument("inputs: --center-norm " + std::to_string(spec.center_norm) + " and --noise " +
                                    std::to_string(spec.noise) + " give values beyond the float32 range");
  return t;
}

}  // namespace smyrf::cli
