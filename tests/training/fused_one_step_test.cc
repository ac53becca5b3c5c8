// FusedOneStep computes ArDiffusion::Generate: same samples to float rounding, for every weight
// (the zero-initialised head layers drawn at random too), several classes including the null
// class, batch > 1, other sizes; and the eval's one-step sampler uses it on the CPU.
#include "training/fused_one_step.h"

#include <gtest/gtest.h>

#include "training/eval.h"

namespace dd2 {
namespace {

ArDiffusion RandomGenerator(int64_t tokens, int64_t width, int64_t heads, int64_t layers, int64_t head_width,
                            int64_t depth) {
  torch::manual_seed(11);
  TransformerOptions o;
  o.tokens = tokens;
  o.width = width;
  o.heads = heads;
  o.layers = layers;
  o.code_dim = 8;
  o.vocab = 16;
  HeadOptions h;
  h.code_dim = 8;
  h.cond_dim = width;
  h.width = head_width;
  h.depth = depth;
  ArDiffusion g(o, h);
  torch::NoGradGuard no_grad;
  for (auto& p : g->parameters()) p.normal_(0.0, 0.3);
  return g;
}

void ExpectSameSamples(ArDiffusion g, int64_t batch, int threads = 1) {
  torch::NoGradGuard no_grad;
  const int64_t n = g->backbone()->options().tokens;
  auto classes = torch::arange(batch, torch::kLong) % (g->backbone()->options().classes + 1);
  auto eps = torch::randn({batch, n, 8});
  auto reference = g->Generate(classes, eps);
  FusedOneStep one_step(g, threads);
  auto fused = one_step.Generate(classes, eps);
  ASSERT_EQ(fused.sizes(), reference.sizes());
  EXPECT_LT((fused - reference).abs().max().item<double>(), 1e-4 * reference.abs().max().item<double>());
  EXPECT_GT(reference.std().item<double>(), 0.5);  // not a degenerate comparison
  // Again with the same object: its helpers serve every call.
  EXPECT_LT((one_step.Generate(classes, eps) - reference).abs().max().item<double>(),
            1e-4 * reference.abs().max().item<double>());
}

TEST(FusedOneStepTest, GivesArDiffusionsSamples) {
  ExpectSameSamples(RandomGenerator(49, 64, 4, 2, 128, 2), 1);
  ExpectSameSamples(RandomGenerator(49, 64, 4, 2, 64, 2), 11);  // classes 0..10: 10 is the null class
  ExpectSameSamples(RandomGenerator(16, 32, 2, 3, 48, 1), 3);
}

// Every sample's rows in parts on several threads: the same samples, for even and uneven
// parts, one layer (both parts' keys in one buffer for every sample) and batches.
TEST(FusedOneStepTest, ThreadsGiveTheSameSamples) {
  ExpectSameSamples(RandomGenerator(49, 64, 4, 2, 128, 2), 1, 2);
  ExpectSameSamples(RandomGenerator(49, 64, 4, 2, 64, 2), 11, 2);
  ExpectSameSamples(RandomGenerator(49, 64, 4, 1, 64, 2), 5, 3);
  ExpectSameSamples(RandomGenerator(16, 32, 2, 3, 48, 1), 4, 4);
  ExpectSameSamples(RandomGenerator(4, 32, 2, 2, 48, 1), 2, 8);  // more threads than rows: one per row
}

TEST(FusedOneStepTest, RefusesWhatItCannotRun) {
  ArDiffusion g = RandomGenerator(49, 64, 4, 2, 64, 2);
  EXPECT_TRUE(FusedOneStep::Supports(g));
  FusedOneStep fused(g);
  EXPECT_THROW(fused.Generate(torch::zeros({1}, torch::kLong), torch::randn({1, 48, 8})), c10::Error);
  EXPECT_THROW(fused.Generate(torch::full({1}, 11, torch::kLong), torch::randn({1, 49, 8})), c10::Error);
  g->to(torch::kDouble);
  EXPECT_FALSE(FusedOneStep::Supports(g));
}

// The eval's one-step sampler (fused on the CPU) draws the same noise and gives the samples
// ArDiffusion::Generate gives for it.
TEST(FusedOneStepTest, EvalsOneStepSamplerUsesItWithTheSameNoise) {
  ArDiffusion g = RandomGenerator(49, 64, 4, 2, 64, 2);
  torch::NoGradGuard no_grad;
  auto sampler = MakeOneStepSampler(g, 8);
  auto classes = torch::arange(4, torch::kLong);
  auto gen = MakeGenerator(5);
  auto samples = sampler->Sample(classes, gen);
  auto again = MakeGenerator(5);
  auto reference = g->Generate(classes, torch::randn({4, 49, 8}, again));
  EXPECT_LT((samples - reference).abs().max().item<double>(), 1e-4 * reference.abs().max().item<double>());
}

}  // namespace
}  // namespace dd2
