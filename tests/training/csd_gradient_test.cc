// The generator's CSD gradient on tiny sizes, in double precision: autograd matches central
// finite differences; nothing reaches the teacher's or the guidance network's parameters; and
// the conditions q_<i are stop-gradient (the gradient equals the finite difference with the
// conditions held fixed, and differs from the one where they move).
#include <gtest/gtest.h>

#include "training/distill.h"

namespace dd2 {
namespace {

struct Tiny {
  TransformerOptions backbone;
  HeadOptions head;
  ArTransformer teacher{nullptr};
  ArDiffusion generator{nullptr}, guidance{nullptr};
  torch::Tensor codebook, classes, eps, t, noise;
  SamplingConfig sampling;
  CsdOptions csd{1.0, /*normalise=*/false};  // the SiD normaliser is stop-gradient by definition

  Tiny() {
    torch::manual_seed(0);
    backbone.vocab = 6;
    backbone.code_dim = 2;
    backbone.tokens = 3;
    backbone.classes = 2;
    backbone.width = 8;
    backbone.layers = 1;
    backbone.heads = 2;
    head.code_dim = 2;
    head.cond_dim = 8;
    head.width = 8;
    head.depth = 1;
    teacher = ArTransformer(backbone);
    generator = ArDiffusion(backbone, head);
    guidance = ArDiffusion(backbone, head);
    for (torch::nn::Module* m : {static_cast<torch::nn::Module*>(teacher.get()), static_cast<torch::nn::Module*>(generator.get()),
                                 static_cast<torch::nn::Module*>(guidance.get())}) {
      m->to(torch::kFloat64);
      torch::NoGradGuard no_grad;
      for (auto& p : m->parameters()) p.normal_(0, 0.3);  // no zero-initialised layers
    }
    codebook = torch::randn({6, 2}, torch::kFloat64);
    classes = torch::tensor({0, 1}, torch::kLong);
    eps = torch::randn({2, 3, 2}, torch::kFloat64);
    t = torch::rand({2, 3}, torch::kFloat64) * 0.8 + 0.1;
    noise = torch::randn({2, 3, 2}, torch::kFloat64);
    sampling.cfg = 2.0;
  }

  torch::Tensor Loss() {
    auto z = generator->Generate(classes, eps);
    return TokensCsdLoss(z, guidance, teacher, codebook, classes, t, noise, sampling, csd);
  }

  // The same objective with the stop-gradient made explicit: the conditions (teacher
  // probabilities, psi features) are frozen at the current generator's output, so finite
  // differences of this function are what the autograd gradient of Loss() must equal.
  std::function<double()> FrozenConditionLoss() {
    torch::NoGradGuard no_grad;
    auto z0 = generator->Generate(classes, eps);
    auto log_p = TeacherLogProbsFor(teacher, classes, z0.slice(1, 0, 2), sampling);
    auto features = guidance->Features(classes, z0);
    return [this, log_p, features] {
      torch::NoGradGuard no_grad;
      return CsdLoss(generator->Generate(classes, eps), t, noise, log_p, codebook,
                     [&](const torch::Tensor& x, const torch::Tensor& tt) { return guidance->Velocity(x, tt, features); },
                     csd)
          .item<double>();
    };
  }
};

TEST(CsdGradientTest, GeneratorGradientMatchesFiniteDifferences) {
  Tiny tiny;
  tiny.generator->zero_grad();
  tiny.Loss().backward();
  auto frozen = tiny.FrozenConditionLoss();
  int checked = 0;
  for (auto& item : tiny.generator->named_parameters()) {
    auto param = item.value();
    // Unused parameters (the backbone's token-logit head) have no gradient: it must be zero.
    auto grad = param.grad().defined() ? param.grad() : torch::zeros_like(param);
    auto flat = param.view(-1);
    for (int64_t i : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double h = 1e-6;
      double original;
      double up, down;
      {
        torch::NoGradGuard no_grad;
        original = flat[i].item<double>();
        flat[i] = original + h;
      }
      up = frozen();
      {
        torch::NoGradGuard no_grad;
        flat[i] = original - h;
      }
      down = frozen();
      {
        torch::NoGradGuard no_grad;
        flat[i] = original;
      }
      const double fd = (up - down) / (2 * h);
      const double ad = grad.view(-1)[i].item<double>();
      EXPECT_NEAR(ad, fd, 1e-6 + 1e-4 * std::abs(fd)) << item.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

TEST(CsdGradientTest, NoGradientReachesTheTeacherOrTheGuidanceNetwork) {
  Tiny tiny;
  tiny.Loss().backward();
  for (const auto& p : tiny.teacher->named_parameters()) {
    EXPECT_FALSE(p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) << p.key();
  }
  for (const auto& p : tiny.guidance->named_parameters()) {
    EXPECT_FALSE(p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) << p.key();
    EXPECT_TRUE(p.value().requires_grad()) << p.key() << " left frozen";
  }
}

TEST(CsdGradientTest, ConditionsAreStopGradient) {
  Tiny tiny;
  torch::Tensor z0;
  {
    torch::NoGradGuard no_grad;
    z0 = tiny.generator->Generate(tiny.classes, tiny.eps);
  }
  auto z = z0.clone().requires_grad_(true);
  auto grad = torch::autograd::grad(
      {TokensCsdLoss(z, tiny.guidance, tiny.teacher, tiny.codebook, tiny.classes, tiny.t, tiny.noise, tiny.sampling, tiny.csd)},
      {z})[0];
  // The loss with the conditions frozen at z0 (teacher probabilities and psi features).
  torch::Tensor log_p, features;
  {
    torch::NoGradGuard no_grad;
    log_p = TeacherLogProbsFor(tiny.teacher, tiny.classes, z0.slice(1, 0, 2), tiny.sampling);
    features = tiny.guidance->Features(tiny.classes, z0);
  }
  auto fixed = [&](const torch::Tensor& q) {
    torch::NoGradGuard no_grad;
    return CsdLoss(q, tiny.t, tiny.noise, log_p, tiny.codebook,
                   [&](const torch::Tensor& x, const torch::Tensor& tt) { return tiny.guidance->Velocity(x, tt, features); },
                   tiny.csd)
        .item<double>();
  };
  auto moving = [&](const torch::Tensor& q) {
    torch::NoGradGuard no_grad;
    return TokensCsdLoss(q, tiny.guidance, tiny.teacher, tiny.codebook, tiny.classes, tiny.t, tiny.noise, tiny.sampling,
                         tiny.csd)
        .item<double>();
  };
  double largest_condition_effect = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t c = 0; c < 2; ++c) {
        const double h = 1e-6;
        auto up = z0.clone(), down = z0.clone();
        up[b][i][c] += h;
        down[b][i][c] -= h;
        const double fd_fixed = (fixed(up) - fixed(down)) / (2 * h);
        const double fd_moving = (moving(up) - moving(down)) / (2 * h);
        EXPECT_NEAR(grad[b][i][c].item<double>(), fd_fixed, 1e-6 + 1e-4 * std::abs(fd_fixed));
        largest_condition_effect = std::max(largest_condition_effect, std::abs(fd_moving - fd_fixed));
      }
    }
  }
  // The conditions do change the loss: a gradient through them would have been visible.
  EXPECT_GT(largest_condition_effect, 1e-3);
}

}  // namespace
}  // namespace dd2
