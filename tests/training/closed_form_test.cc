#include "training/closed_form.h"

#include <gtest/gtest.h>

namespace dd2 {
namespace {

// Tiny sizes in double precision: B=2, n=3, V=5, C=2.
struct Fixture {
  torch::Tensor codebook = torch::randn({5, 2}, torch::kFloat64);
  torch::Tensor log_p;
  torch::Tensor x = torch::randn({2, 3, 2}, torch::kFloat64);
  torch::Tensor t = torch::rand({2, 3}, torch::kFloat64) * 0.8 + 0.1;
  Fixture() {
    torch::manual_seed(0);
    codebook = torch::randn({5, 2}, torch::kFloat64);
    log_p = torch::randn({2, 3, 5}, torch::kFloat64).log_softmax(-1);
    x = torch::randn({2, 3, 2}, torch::kFloat64);
    t = torch::rand({2, 3}, torch::kFloat64) * 0.8 + 0.1;
  }
};

TEST(ClosedFormTest, ScoreIsTheGradientOfTheMixtureLogDensity) {
  Fixture f;
  auto x = f.x.clone().requires_grad_(true);
  auto density = MixtureLogDensity(x, f.t, f.log_p, f.codebook).sum();
  auto grad = torch::autograd::grad({density}, {x})[0];
  auto score = Score(f.x, f.t, f.log_p, f.codebook);
  EXPECT_TRUE(torch::allclose(score, grad, 1e-9, 1e-9)) << score - grad;
}

TEST(ClosedFormTest, VelocityMatchesAMonteCarloEstimateOfEpsMinusX0GivenXt) {
  // One position, t = 0.6: draw (q ~ p, eps), form x_t, and average eps - q over draws whose
  // x_t falls near a chosen point, weighting by the exact kernel (importance sampling).
  torch::manual_seed(1);
  auto codebook = torch::tensor({{-1.0}, {0.5}, {2.0}}, torch::kFloat64);
  auto log_p = torch::tensor({0.2, 0.5, 0.3}, torch::kFloat64).log();
  const double t = 0.6;
  auto x = torch::tensor({0.3}, torch::kFloat64);
  const int64_t draws = 400000;
  auto q_idx = torch::multinomial(log_p.exp(), draws, /*replacement=*/true);
  auto q = codebook.index_select(0, q_idx);                       // [draws, 1]
  // Condition exactly on x_t = x: eps = (x - (1-t) q) / t, weight = N(eps; 0, 1).
  auto eps = (x - (1 - t) * q) / t;
  auto weight = (-0.5 * eps * eps).exp().squeeze(-1);
  auto mc = ((eps - q).squeeze(-1) * weight).sum() / weight.sum();
  auto v = Velocity(x.view({1, 1}), torch::tensor({t}, torch::kFloat64), log_p.view({1, 3}), codebook);
  EXPECT_NEAR(v.item<double>(), mc.item<double>(), 5e-3);
}

TEST(ClosedFormTest, ParameterisationsRoundTrip) {
  Fixture f;
  auto v = Velocity(f.x, f.t, f.log_p, f.codebook);
  auto s = Score(f.x, f.t, f.log_p, f.codebook);
  auto x0 = Denoiser(f.x, f.t, f.log_p, f.codebook);
  auto tt = f.t.unsqueeze(-1);
  EXPECT_TRUE(torch::allclose(x0, f.x - tt * v, 1e-10, 1e-10));
  EXPECT_TRUE(torch::allclose(s, -(f.x + (1 - tt) * v) / tt, 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(v, (-tt * s - f.x) / (1 - tt), 1e-9, 1e-9));
}

TEST(ClosedFormTest, MaskedEntriesGetExactlyZeroWeight) {
  Fixture f;
  auto log_p = f.log_p.clone();
  log_p.index_put_({torch::indexing::Ellipsis, 1}, -std::numeric_limits<double>::infinity());
  log_p = log_p.log_softmax(-1);
  auto w = PosteriorLogWeights(f.x, f.t, log_p, f.codebook).exp();
  EXPECT_EQ(w.select(-1, 1).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(w.sum(-1), torch::ones_like(f.t)));
  auto x = f.x.clone().requires_grad_(true);
  auto grad = torch::autograd::grad({Score(x, f.t, log_p, f.codebook).sum()}, {x})[0];
  EXPECT_TRUE(torch::isfinite(grad).all().item<bool>());
}

TEST(ClosedFormTest, LimitsAtTZeroAndOne) {
  Fixture f;
  auto near_one = torch::full_like(f.t, 1 - 1e-7);
  auto x0 = Denoiser(f.x, near_one, f.log_p, f.codebook);
  auto mean = torch::matmul(f.log_p.exp(), f.codebook);  // sum_j p_j c_j
  EXPECT_TRUE(torch::allclose(x0, mean, 1e-5, 1e-5));
  // t -> 0: the nearest code in the support.
  auto log_p = f.log_p.clone();
  log_p.index_put_({torch::indexing::Ellipsis, 0}, -std::numeric_limits<double>::infinity());
  auto near_zero = torch::full_like(f.t, 1e-4);
  auto x0_small = Denoiser(f.x, near_zero, log_p, f.codebook);
  auto d = torch::cdist(f.x.view({-1, 2}), f.codebook).view({2, 3, 5});
  d.index_put_({torch::indexing::Ellipsis, 0}, 1e9);
  auto nearest = f.codebook.index_select(0, d.argmin(-1).view(-1)).view({2, 3, 2});
  EXPECT_TRUE(torch::allclose(x0_small, nearest, 1e-6, 1e-6));
}

TEST(ClosedFormTest, CfgTopKTopPMatchADirectComputation) {
  torch::manual_seed(3);
  auto cond = torch::randn({7}, torch::kFloat64);
  auto uncond = torch::randn({7}, torch::kFloat64);
  SamplingConfig c;
  c.cfg = 2.0;
  c.temperature = 0.7;
  c.top_k = 5;
  c.top_p = 0.8;
  auto got = TeacherLogProbs(cond, uncond, c).exp();
  // Direct: guided logits, temperature, keep the 5 largest, then the smallest prefix (by
  // descending probability) whose mass reaches 0.8 among those, renormalise.
  std::vector<double> logits(7);
  for (int i = 0; i < 7; ++i) {
    logits[i] = (uncond[i].item<double>() + 2.0 * (cond[i].item<double>() - uncond[i].item<double>())) / 0.7;
  }
  std::vector<int> order(7);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<int> keep(order.begin(), order.begin() + 5);
  double z = 0;
  for (int i : keep) z += std::exp(logits[i]);
  std::vector<int> nucleus;
  double mass = 0;
  for (int i : keep) {
    nucleus.push_back(i);
    mass += std::exp(logits[i]) / z;
    if (mass >= 0.8) break;
  }
  double z2 = 0;
  for (int i : nucleus) z2 += std::exp(logits[i]);
  std::vector<double> want(7, 0.0);
  for (int i : nucleus) want[i] = std::exp(logits[i]) / z2;
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(got[i].item<double>(), want[i], 1e-12) << i;
  // No guidance, no filtering: plain softmax.
  auto plain = TeacherLogProbs(cond, torch::Tensor(), SamplingConfig{}).exp();
  EXPECT_TRUE(torch::allclose(plain, cond.softmax(-1)));
}

}  // namespace
}  // namespace dd2
