// Sample-quality metrics on feature vectors (double precision inside):
// Frechet distance between Gaussians fitted to two feature sets (FID), an Inception-style score
// from classifier probabilities, and k-NN manifold precision/recall (Kynkaanniemi et al. 2019).
// Pure functions; thread-compatible.
#ifndef DD2_TRAINING_METRICS_H_
#define DD2_TRAINING_METRICS_H_

#include <torch/torch.h>

namespace dd2 {

// ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), via symmetric eigendecompositions.
double FrechetDistance(const torch::Tensor& mu1, const torch::Tensor& sigma1, const torch::Tensor& mu2,
                       const torch::Tensor& sigma2);

// FID between feature sets [N, D] and [M, D].
double Fid(const torch::Tensor& features_a, const torch::Tensor& features_b);

// exp(E_x KL(p(y|x) || p(y))) for class probabilities [N, K].
double InceptionScore(const torch::Tensor& probs);

struct PrecisionRecall {
  double precision = 0;  // share of fake samples inside the real manifold
  double recall = 0;     // share of real samples inside the fake manifold
};
// Manifolds are unions of balls reaching each point's k-th nearest neighbour in its own set.
PrecisionRecall KnnPrecisionRecall(const torch::Tensor& real, const torch::Tensor& fake, int64_t k = 3);

}  // namespace dd2

#endif  // DD2_TRAINING_METRICS_H_
