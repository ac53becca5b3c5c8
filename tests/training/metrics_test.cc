#include "training/metrics.h"

#include <gtest/gtest.h>

namespace dd2 {
namespace {

// Closed form for diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
double DiagonalFrechet(const torch::Tensor& mu1, const torch::Tensor& a, const torch::Tensor& mu2,
                       const torch::Tensor& b) {
  return ((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()).item<double>();
}

TEST(MetricsTest, FrechetDistanceMatchesTheClosedFormForDiagonalGaussians) {
  auto mu1 = torch::tensor({0.0, 1.0, -2.0}, torch::kFloat64);
  auto mu2 = torch::tensor({0.5, 1.0, 0.0}, torch::kFloat64);
  auto a = torch::tensor({1.0, 4.0, 0.25}, torch::kFloat64);
  auto b = torch::tensor({2.0, 1.0, 0.25}, torch::kFloat64);
  EXPECT_NEAR(FrechetDistance(mu1, torch::diag(a), mu2, torch::diag(b)), DiagonalFrechet(mu1, a, mu2, b), 1e-10);
}

TEST(MetricsTest, FrechetDistanceIsInvariantToACommonRotation) {
  // Rotate diagonal Gaussians by the same orthogonal Q: the distance must not change, which
  // exercises the non-commuting path of the matrix square root.
  torch::manual_seed(0);
  auto q = std::get<0>(torch::linalg_qr(torch::randn({4, 4}, torch::kFloat64)));
  auto a = torch::tensor({1.0, 2.0, 3.0, 0.5}, torch::kFloat64), b = torch::tensor({0.3, 2.5, 1.0, 4.0}, torch::kFloat64);
  auto mu1 = torch::randn({4}, torch::kFloat64), mu2 = torch::randn({4}, torch::kFloat64);
  auto s1 = q.matmul(torch::diag(a)).matmul(q.t()), s2 = q.matmul(torch::diag(b)).matmul(q.t());
  EXPECT_NEAR(FrechetDistance(q.matmul(mu1), s1, q.matmul(mu2), s2), DiagonalFrechet(mu1, a, mu2, b), 1e-9);
}

TEST(MetricsTest, FidOfSamplesApproachesThePopulationValue) {
  torch::manual_seed(1);
  auto x = torch::randn({200000, 2}, torch::kFloat64) * torch::tensor({1.0, 2.0}, torch::kFloat64);
  auto y = torch::randn({200000, 2}, torch::kFloat64) * torch::tensor({1.0, 1.0}, torch::kFloat64) + 1.0;
  const double want = DiagonalFrechet(torch::zeros({2}, torch::kFloat64), torch::tensor({1.0, 4.0}, torch::kFloat64),
                                      torch::ones({2}, torch::kFloat64), torch::tensor({1.0, 1.0}, torch::kFloat64));
  EXPECT_NEAR(Fid(x, y), want, 0.05);
  EXPECT_NEAR(Fid(x, x), 0.0, 1e-9);
}

TEST(MetricsTest, InceptionScoreRangesFromOneToTheNumberOfClasses) {
  auto confident = torch::eye(10, torch::kFloat64).repeat({5, 1});
  EXPECT_NEAR(InceptionScore(confident), 10.0, 1e-6);
  auto uniform = torch::full({50, 10}, 0.1, torch::kFloat64);
  EXPECT_NEAR(InceptionScore(uniform), 1.0, 1e-9);
}

TEST(MetricsTest, PrecisionAndRecallSeparateOverlapFromDisjointSets) {
  torch::manual_seed(2);
  auto real = torch::randn({500, 3});
  auto same = KnnPrecisionRecall(real, real, 3);
  EXPECT_DOUBLE_EQ(same.precision, 1.0);
  EXPECT_DOUBLE_EQ(same.recall, 1.0);
  auto far = KnnPrecisionRecall(real, torch::randn({500, 3}) + 100, 3);
  EXPECT_DOUBLE_EQ(far.precision, 0.0);
  EXPECT_DOUBLE_EQ(far.recall, 0.0);
  // A generator covering only half the modes: full precision, about half the recall.
  auto modes = torch::cat({torch::randn({500, 2}), torch::randn({500, 2}) + 50});
  auto half = KnnPrecisionRecall(modes, torch::randn({500, 2}), 3);
  EXPECT_GT(half.precision, 0.9);
  EXPECT_NEAR(half.recall, 0.5, 0.1);
}

}  // namespace
}  // namespace dd2
