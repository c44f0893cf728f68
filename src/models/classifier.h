// L2-regularised logistic regression (binary), the probe of the no-retraining evaluation:
// trained once on dense-attention embeddings, then applied unchanged to every method's.
//
//   minimise  (1/n) sum_i log(1 + exp(-y_i (w . x_i + b)))  +  (lambda / 2) |w|^2,  y in {-1, +1}
//
// The bias is not regularised. Solved by Newton's method in double (the problem is strictly
// convex for lambda > 0), to a gradient norm below 1e-10: the solution does not depend on
// an optimiser's schedule, so the accuracies are reproducible.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace smyrf::models {

struct LogisticModel {
  std::vector<double> w;
  double b = 0;
  int iterations = 0;
  double decision(const float* x) const;  // w . x + b
};

// x: n rows of `dim` floats; labels 0 or 1. Throws smyrf::Error on bad sizes, a label other
// than 0/1, lambda <= 0, or a single class.
LogisticModel fit_logistic(std::span<const float> x, std::size_t dim, std::span<const int> labels,
                           double lambda);

struct BinaryScores {
  double accuracy = 0;
  double f1 = 0;  // of class 1
  std::size_t n = 0;
};
BinaryScores score_logistic(const LogisticModel& m, std::span<const float> x, std::size_t dim,
                            std::span<const int> labels);

// Indices of a seeded stratified split: `train_fraction` of each class goes to train (order
// within each side ascending). Same seed and labels -> same split.
struct Split {
  std::vector<std::size_t> train, test;
};
Split stratified_split(std::span<const int> labels, double train_fraction, std::uint64_t seed);

// lambda from `grid` by k-fold cross-validated accuracy on (x, labels) (stratified folds from
// `seed`); ties go to the larger lambda (stronger regularisation).
double cross_validate_lambda(std::span<const float> x, std::size_t dim, std::span<const int> labels,
                             std::span<const double> grid, int folds, std::uint64_t seed);

}  // namespace smyrf::models
