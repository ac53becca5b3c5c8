#include "training/metrics.h"

namespace dd2 {
namespace {

torch::Tensor SqrtPsd(const torch::Tensor& m) {
  auto eig = torch::linalg_eigh(m, "L");
  auto values = std::get<0>(eig).clamp_min(0).sqrt();
  auto vectors = std::get<1>(eig);
  return torch::matmul(vectors * values.unsqueeze(0), vectors.transpose(0, 1));
}

std::pair<torch::Tensor, torch::Tensor> MeanCov(const torch::Tensor& f) {
  auto x = f.to(torch::kFloat64);
  auto mu = x.mean(0);
  auto centered = x - mu;
  auto cov = torch::matmul(centered.transpose(0, 1), centered) / (x.size(0) - 1);
  return {mu, cov};
}

// Distance from every row of `a` to its k-th nearest other row of `a`.
torch::Tensor KthRadius(const torch::Tensor& a, int64_t k) {
  auto d = torch::cdist(a, a);
  return std::get<0>(d.topk(k + 1, -1, /*largest=*/false)).select(-1, k);  // column 0 is self
}

}  // namespace

double FrechetDistance(const torch::Tensor& mu1, const torch::Tensor& sigma1, const torch::Tensor& mu2,
                       const torch::Tensor& sigma2) {
  auto s1 = sigma1.to(torch::kFloat64), s2 = sigma2.to(torch::kFloat64);
  auto root1 = SqrtPsd(s1);
  auto middle = torch::matmul(torch::matmul(root1, s2), root1);
  middle = (middle + middle.transpose(0, 1)) / 2;
  auto cross = std::get<0>(torch::linalg_eigh(middle, "L")).clamp_min(0).sqrt().sum();
  auto diff = (mu1 - mu2).to(torch::kFloat64);
  return (diff.dot(diff) + s1.trace() + s2.trace() - 2 * cross).item<double>();
}

double Fid(const torch::Tensor& features_a, const torch::Tensor& features_b) {
  auto [mu1, s1] = MeanCov(features_a);
  auto [mu2, s2] = MeanCov(features_b);
  return FrechetDistance(mu1, s1, mu2, s2);
}

double InceptionScore(const torch::Tensor& probs) {
  auto p = probs.to(torch::kFloat64).clamp_min(1e-12);
  auto marginal = p.mean(0, /*keepdim=*/true);
  auto kl = (p * (p.log() - marginal.log())).sum(1);
  return std::exp(kl.mean().item<double>());
}

PrecisionRecall KnnPrecisionRecall(const torch::Tensor& real, const torch::Tensor& fake, int64_t k) {
  auto r = real.to(torch::kFloat64), f = fake.to(torch::kFloat64);
  auto r_radius = KthRadius(r, k), f_radius = KthRadius(f, k);
  auto d = torch::cdist(f, r);  // [F, R]
  PrecisionRecall out;
  out.precision = (d <= r_radius.unsqueeze(0)).any(1).to(torch::kFloat64).mean().item<double>();
  out.recall = (d.transpose(0, 1) <= f_radius.unsqueeze(0)).any(1).to(torch::kFloat64).mean().item<double>();
  return out;
}

}  // namespace dd2
