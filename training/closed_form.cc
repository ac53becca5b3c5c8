#include "training/closed_form.h"

#include <cmath>
#include <limits>

namespace dd2 {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// ||x - (1-t) c_j||^2 for every j: [..., V].
torch::Tensor SquaredDistances(const torch::Tensor& x, const torch::Tensor& t,
                               const torch::Tensor& codebook) {
  auto a = (1 - t).unsqueeze(-1);                                   // [..., 1]
  auto xx = (x * x).sum(-1, /*keepdim=*/true);                      // [..., 1]
  auto xc = torch::matmul(x, codebook.transpose(0, 1));             // [..., V]
  auto cc = (codebook * codebook).sum(-1);                          // [V]
  return xx - 2 * a * xc + a * a * cc;
}

}  // namespace

torch::Tensor TeacherLogProbs(const torch::Tensor& cond, const torch::Tensor& uncond,
                              const SamplingConfig& config) {
  torch::Tensor logits = cond;
  if (config.cfg != 1.0) logits = uncond + config.cfg * (cond - uncond);
  logits = logits / config.temperature;
  const int64_t vocab = logits.size(-1);
  if (config.top_k > 0 && config.top_k < vocab) {
    auto kth = std::get<0>(logits.topk(config.top_k, -1)).select(-1, config.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, kNegInf);
  }
  if (config.top_p < 1.0) {
    // HF TopPLogitsWarper: sort ascending, drop tokens whose cumulative probability is
    // <= 1 - top_p, always keep the most likely one.
    auto sorted = logits.sort(-1, /*descending=*/false);
    auto sorted_logits = std::get<0>(sorted);
    auto indices = std::get<1>(sorted);
    auto cumulative = sorted_logits.softmax(-1).cumsum(-1);
    auto remove_sorted = cumulative <= (1 - config.top_p);
    remove_sorted.select(-1, vocab - 1).fill_(false);
    auto remove = torch::zeros_like(remove_sorted).scatter(-1, indices, remove_sorted);
    logits = logits.masked_fill(remove, kNegInf);
  }
  return logits.log_softmax(-1);
}

torch::Tensor PosteriorLogWeights(const torch::Tensor& x, const torch::Tensor& t,
                                  const torch::Tensor& log_p, const torch::Tensor& codebook) {
  auto d2 = SquaredDistances(x, t, codebook);
  auto logits = log_p - d2 / (2 * (t * t).unsqueeze(-1));
  return logits.log_softmax(-1);
}

torch::Tensor Denoiser(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                       const torch::Tensor& codebook) {
  return torch::matmul(PosteriorLogWeights(x, t, log_p, codebook).exp(), codebook);
}

torch::Tensor Score(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                    const torch::Tensor& codebook) {
  auto tt = t.unsqueeze(-1);
  return -(x - (1 - tt) * Denoiser(x, t, log_p, codebook)) / (tt * tt);
}

torch::Tensor Velocity(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                       const torch::Tensor& codebook) {
  return (x - Denoiser(x, t, log_p, codebook)) / t.unsqueeze(-1);
}

torch::Tensor MixtureLogDensity(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& log_p, const torch::Tensor& codebook) {
  const int64_t dim = x.size(-1);
  auto d2 = SquaredDistances(x, t, codebook);
  auto tt = (t * t).unsqueeze(-1);
  auto log_norm = -0.5 * dim * torch::log(2 * M_PI * tt);
  return torch::logsumexp(log_p - d2 / (2 * tt) + log_norm, -1);
}

}  // namespace dd2
