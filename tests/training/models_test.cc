#include "training/models.h"

#include <gtest/gtest.h>

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

TEST(ArTransformerTest, CachedStepLogitsEqualTheFullForward) {
  auto model = TinyTeacher();
  torch::NoGradGuard no_grad;
  auto classes = torch::tensor({2}, torch::kLong);
  auto prefix = torch::randn({1, 8, 4});
  auto full = model->forward(classes, prefix);  // [1, 9, 16]
  KvCache cache;
  for (int64_t i = 0; i < 9; ++i) {
    auto step = model->Step(classes, i == 0 ? torch::Tensor() : prefix.select(1, i - 1), i, cache);
    EXPECT_TRUE(torch::allclose(step, full.select(1, i), 1e-5, 1e-5)) << i;
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

TEST(VqVaeTest, DecoderAcceptsOffCodebookVectorsAndCodesAreUnitNorm) {
  VqVaeOptions o;
  o.codebook_size = 32;
  o.code_dim = 8;
  o.channels = 16;
  VqVae model(o);
  auto images = torch::rand({3, 1, 28, 28});
  auto out = model->forward(images);
  EXPECT_EQ(out.reconstruction.sizes(), images.sizes());
  EXPECT_EQ(out.indices.sizes(), (std::vector<int64_t>{3, 49}));
  EXPECT_TRUE(torch::allclose(model->Codebook().norm(2, -1), torch::ones({32})));
  auto decoded = model->Decode(torch::randn({3, 49, 8}));
  EXPECT_EQ(decoded.sizes(), images.sizes());
}

}  // namespace
}  // namespace dd2
