#include "training/models.h"

#include <gtest/gtest.h>

#include <cmath>

#include "training/eval.h"

namespace dd2 {
namespace {

ArTransformer TinyTeacher() {
  TransformerOptions o;
  o.vocab = 16;
  o.code_dim = 4;
  o.tokens = 9;
  o.classes = 3;
  o.width = 16;
  o.layers = 2;
  o.heads = 2;
  torch::manual_seed(0);
  return ArTransformer(o);
}

TEST(ArTransformerTest, KvCacheSamplerGivesTheSameTokensAsTheUncachedOne) {
  auto model = TinyTeacher();
  auto codebook = torch::randn({16, 4});
  auto classes = torch::tensor({0, 1, 2, 1}, torch::kLong);
  for (double cfg : {1.0, 2.0}) {
    SamplingConfig s;
    s.cfg = cfg;
    s.top_k = 8;
    s.top_p = 0.9;
    auto g1 = MakeGenerator(42), g2 = MakeGenerator(42);
    auto cached = SampleAr(model, codebook, classes, s, g1, /*use_cache=*/true);
    auto uncached = SampleAr(model, codebook, classes, s, g2, /*use_cache=*/false);
    EXPECT_TRUE(cached.equal(uncached)) << cached << uncached;
    EXPECT_EQ(cached.sizes(), (std::vector<int64_t>{4, 9}));
  }
}

TEST(ArTransformerTest, CachedStepLogitsAndHiddenStatesEqualTheFullForward) {
  auto model = TinyTeacher();
  torch::NoGradGuard no_grad;
  auto classes = torch::tensor({2, 3}, torch::kLong);
  auto prefix = torch::randn({2, 8, 4});
  auto full = model->forward(classes, prefix);  // [2, 9, 16]
  auto hidden = model->Hidden(classes, prefix);
  KvCache cache, hidden_cache;
  for (int64_t i = 0; i < 9; ++i) {
    auto previous = i == 0 ? torch::Tensor() : prefix.select(1, i - 1);
    EXPECT_TRUE(torch::allclose(model->Step(classes, previous, i, cache), full.select(1, i), 1e-5, 1e-5)) << i;
    EXPECT_TRUE(torch::allclose(model->StepHidden(classes, previous, i, hidden_cache), hidden.select(1, i), 1e-5, 1e-5))
        << i;
  }
}

TEST(ArTransformerTest, LaterTokensDoNotInfluenceEarlierLogits) {
  auto model = TinyTeacher();
  torch::NoGradGuard no_grad;
  auto classes = torch::tensor({1}, torch::kLong);
  auto prefix = torch::randn({1, 8, 4});
  auto changed = prefix.clone();
  changed.select(1, 5).fill_(3.0);
  auto a = model->forward(classes, prefix), b = model->forward(classes, changed);
  EXPECT_TRUE(torch::allclose(a.slice(1, 0, 6), b.slice(1, 0, 6)));
  EXPECT_FALSE(torch::allclose(a.slice(1, 6), b.slice(1, 6)));
}

// The teacher-likelihood metric: the mean of -log p(token | class, tokens before it).
TEST(TeacherNllTest, IsTheMeanNegativeLogProbabilityOfEachTokenGivenItsPrefix) {
  auto model = TinyTeacher();
  torch::NoGradGuard no_grad;
  auto codebook = torch::randn({16, 4});
  auto classes = torch::tensor({0, 2}, torch::kLong);
  torch::manual_seed(3);
  auto codes = torch::randint(16, {2, 9}, torch::kLong);
  double by_hand = 0;
  for (int64_t b = 0; b < 2; ++b) {
    KvCache cache;  // token by token, through the cached path
    for (int64_t i = 0; i < 9; ++i) {
      auto prev = i == 0 ? torch::Tensor() : codebook[codes[b][i - 1].item<int64_t>()].view({1, 4});
      auto logp = model->Step(classes.slice(0, b, b + 1), prev, i, cache).log_softmax(-1);
      by_hand -= logp[0][codes[b][i].item<int64_t>()].item<double>();
    }
  }
  EXPECT_NEAR(TeacherNll(model, codebook, classes, codes), by_hand / 18, 1e-5);
}

// Sequences the teacher finds most likely score below log V, the least likely above it.
TEST(TeacherNllTest, OrdersGreedyBelowUniformBelowLeastLikely) {
  auto model = TinyTeacher();
  torch::NoGradGuard no_grad;
  auto codebook = torch::randn({16, 4});
  auto classes = torch::tensor({1}, torch::kLong);
  auto pick = [&](bool most) {
    std::vector<int64_t> codes;
    KvCache cache;
    torch::Tensor prev;
    for (int64_t i = 0; i < 9; ++i) {
      auto logits = model->Step(classes, prev, i, cache)[0];
      const int64_t c = (most ? logits.argmax() : logits.argmin()).item<int64_t>();
      codes.push_back(c);
      prev = codebook[c].view({1, 4});
    }
    return torch::tensor(codes, torch::kLong).view({1, 9});
  };
  const double greedy = TeacherNll(model, codebook, classes, pick(true));
  const double worst = TeacherNll(model, codebook, classes, pick(false));
  EXPECT_LT(greedy, std::log(16.0));
  EXPECT_GT(worst, std::log(16.0));
}

// Both token grids: 7x7 (49 tokens) and 16x16 (256 tokens, images padded to 32x32).
TEST(VqVaeTest, EachGridDecodesOffCodebookVectorsTo28x28ImagesInRasterOrder) {
  for (auto [grid, n] : {std::pair<int64_t, int64_t>{7, 49}, {16, 256}}) {
    SCOPED_TRACE(grid);
    VqVaeOptions o;
    o.codebook_size = 32;
    o.code_dim = 8;
    o.channels = 16;
    o.grid = grid;
    VqVae model(o);
    auto images = torch::rand({3, 1, 28, 28});
    auto out = model->forward(images);
    EXPECT_EQ(out.reconstruction.sizes(), images.sizes());
    EXPECT_EQ(out.indices.sizes(), (std::vector<int64_t>{3, n}));
    EXPECT_TRUE(torch::allclose(model->Codebook().norm(2, -1), torch::ones({32})));
    EXPECT_EQ(model->Decode(torch::randn({3, n, 8})).sizes(), images.sizes());
    // A bright patch in the image's top-left changes the first token's latent, not the last's.
    auto moved = images.clone();
    moved.slice(2, 0, 4).slice(3, 0, 4).fill_(1.0);
    auto delta = (model->Encode(moved) - model->Encode(images)).norm(2, -1);
    EXPECT_GT(delta[0][0].item<double>(), 0.0);
    EXPECT_EQ(delta[0][n - 1].item<double>(), 0.0);
  }
  VqVaeOptions nine;
  nine.grid = 9;
  EXPECT_THROW(VqVae{nine}, c10::Error);
}

}  // namespace
}  // namespace dd2
