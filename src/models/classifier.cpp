#include "models/classifier.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <Eigen/Dense>

#include "common/rng.h"
#include "smyrf/smyrf.h"

namespace smyrf::models {
namespace {

void check_sizes(std::span<const float> x, std::size_t dim, std::span<const int> labels) {
  if (dim == 0) throw Error("smyrf: classifier: dim = 0: must be >= 1");
  if (x.size() != labels.size() * dim)
    throw Error("smyrf: classifier: x has " + std::to_string(x.size()) + " values, expected " +
                std::to_string(labels.size()) + " rows x " + std::to_string(dim));
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] != 0 && labels[i] != 1)
      throw Error("smyrf: classifier: labels[" + std::to_string(i) + "] = " +
                  std::to_string(labels[i]) + ": must be 0 or 1");
}

// log(1 + e^z) without overflow.
double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }
double sigmoid(double z) {
  return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z));
}

// Fisher-Yates with the counter RNG.
void shuffle(std::vector<std::size_t>& v, std::uint64_t seed, std::uint64_t stream) {
  for (std::size_t i = v.size(); i > 1; --i) {
    const std::size_t j = static_cast<std::size_t>(detail::random_bits(seed, stream, i) % i);
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace

double LogisticModel::decision(const float* x) const {
  double z = b;
  for (std::size_t j = 0; j < w.size(); ++j) z += w[j] * static_cast<double>(x[j]);
  return z;
}

LogisticModel fit_logistic(std::span<const float> x, std::size_t dim, std::span<const int> labels,
                           double lambda) {
  check_sizes(x, dim, labels);
  if (!(lambda > 0)) throw Error("smyrf: classifier: lambda = " + std::to_string(lambda) + ": must be > 0");
  const std::size_t n = labels.size();
  const auto ones = static_cast<std::size_t>(std::count(labels.begin(), labels.end(), 1));
  if (ones == 0 || ones == n)
    throw Error("smyrf: classifier: the training labels hold a single class");

  // Design matrix with a trailing column of ones for the bias.
  const Eigen::Index p = static_cast<Eigen::Index>(dim) + 1;
  Eigen::MatrixXd X(static_cast<Eigen::Index>(n), p);
  Eigen::VectorXd y(static_cast<Eigen::Index>(n));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < dim; ++j) X(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = x[i * dim + j];
    X(static_cast<Eigen::Index>(i), p - 1) = 1.0;
    y(static_cast<Eigen::Index>(i)) = labels[i] ? 1.0 : -1.0;
  }
  Eigen::VectorXd reg = Eigen::VectorXd::Constant(p, lambda);
  reg(p - 1) = 0.0;
  const double inv_n = 1.0 / static_cast<double>(n);
  auto objective = [&](const Eigen::VectorXd& w) {
    const Eigen::VectorXd z = X * w;
    double f = 0;
    for (Eigen::Index i = 0; i < z.size(); ++i) f += softplus(-y(i) * z(i));
    return f * inv_n + 0.5 * (reg.array() * w.array().square()).sum();
  };

  Eigen::VectorXd w = Eigen::VectorXd::Zero(p);
  double f = objective(w);
  LogisticModel m;
  for (int it = 0; it < 100; ++it) {
    const Eigen::VectorXd z = X * w;
    Eigen::VectorXd g_coef(z.size()), h_coef(z.size());
    for (Eigen::Index i = 0; i < z.size(); ++i) {
      const double s = sigmoid(-y(i) * z(i));  // d/dz softplus(-y z) = -y s
      g_coef(i) = -y(i) * s * inv_n;
      h_coef(i) = s * (1 - s) * inv_n;
    }
    const Eigen::VectorXd grad = X.transpose() * g_coef + reg.cwiseProduct(w);
    m.iterations = it;
    if (grad.norm() < 1e-10) break;
    Eigen::MatrixXd H = X.transpose() * h_coef.asDiagonal() * X;
    H.diagonal() += reg;
    H.diagonal().array() += 1e-12;  // the bias direction, if the data are separable
    const Eigen::VectorXd step = H.ldlt().solve(grad);
    // Backtracking line search keeps Newton monotone far from the optimum.
    double t = 1.0;
    Eigen::VectorXd next = w - step;
    double fn = objective(next);
    while (fn > f - 1e-4 * t * grad.dot(step) && t > 1e-10) {
      t *= 0.5;
      next = w - t * step;
      fn = objective(next);
    }
    if (!(fn <= f)) break;  // no further progress in floating point
    w = next;
    f = fn;
  }
  m.w.assign(w.data(), w.data() + dim);
  m.b = w(p - 1);
  return m;
}

BinaryScores score_logistic(const LogisticModel& m, std::span<const float> x, std::size_t dim,
                            std::span<const int> labels) {
  check_sizes(x, dim, labels);
  if (m.w.size() != dim)
    throw Error("smyrf: classifier: model has " + std::to_string(m.w.size()) + " weights, x rows have " +
                std::to_string(dim));
  std::size_t tp = 0, fp = 0, fn = 0, correct = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const int pred = m.decision(x.data() + i * dim) > 0 ? 1 : 0;
    correct += pred == labels[i];
    tp += pred == 1 && labels[i] == 1;
    fp += pred == 1 && labels[i] == 0;
    fn += pred == 0 && labels[i] == 1;
  }
  BinaryScores s;
  s.n = labels.size();
  s.accuracy = s.n ? static_cast<double>(correct) / static_cast<double>(s.n) : 0.0;
  s.f1 = tp ? 2.0 * static_cast<double>(tp) / static_cast<double>(2 * tp + fp + fn) : 0.0;
  return s;
}

Split stratified_split(std::span<const int> labels, double train_fraction, std::uint64_t seed) {
  if (!(train_fraction > 0 && train_fraction < 1))
    throw Error("smyrf: classifier: train_fraction = " + std::to_string(train_fraction) +
                ": must be in (0, 1)");
  Split split;
  for (int cls = 0; cls <= 1; ++cls) {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == cls) idx.push_back(i);
    shuffle(idx, seed, 0x5b117 + static_cast<std::uint64_t>(cls));
    const auto n_train = static_cast<std::size_t>(std::llround(train_fraction * static_cast<double>(idx.size())));
    split.train.insert(split.train.end(), idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n_train));
    split.test.insert(split.test.end(), idx.begin() + static_cast<std::ptrdiff_t>(n_train), idx.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.test.begin(), split.test.end());
  return split;
}

double cross_validate_lambda(std::span<const float> x, std::size_t dim, std::span<const int> labels,
                             std::span<const double> grid, int folds, std::uint64_t seed) {
  check_sizes(x, dim, labels);
  if (grid.empty()) throw Error("smyrf: classifier: empty lambda grid");
  if (folds < 2) throw Error("smyrf: classifier: folds = " + std::to_string(folds) + ": must be >= 2");
  // Stratified fold of every row: each class shuffled, then dealt round-robin.
  std::vector<int> fold(labels.size());
  for (int cls = 0; cls <= 1; ++cls) {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == cls) idx.push_back(i);
    shuffle(idx, seed, 0xf01d + static_cast<std::uint64_t>(cls));
    for (std::size_t k = 0; k < idx.size(); ++k) fold[idx[k]] = static_cast<int>(k % static_cast<std::size_t>(folds));
  }
  std::vector<double> lambdas(grid.begin(), grid.end());
  std::sort(lambdas.begin(), lambdas.end());
  double best_lambda = lambdas[0], best_acc = -1;
  for (double lambda : lambdas) {
    std::size_t correct = 0;
    for (int f = 0; f < folds; ++f) {
      std::vector<float> xtr, xte;
      std::vector<int> ytr, yte;
      for (std::size_t i = 0; i < labels.size(); ++i) {
        auto& xs = fold[i] == f ? xte : xtr;
        (fold[i] == f ? yte : ytr).push_back(labels[i]);
        xs.insert(xs.end(), x.begin() + static_cast<std::ptrdiff_t>(i * dim),
                  x.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
      }
      const LogisticModel m = fit_logistic(xtr, dim, ytr, lambda);
      correct += static_cast<std::size_t>(std::llround(score_logistic(m, xte, dim, yte).accuracy *
                                                       static_cast<double>(yte.size())));
    }
    const double acc = static_cast<double>(correct) / static_cast<double>(labels.size());
    if (acc >= best_acc) best_acc = acc, best_lambda = lambda;
  }
  return best_lambda;
}

}  // namespace smyrf::models
