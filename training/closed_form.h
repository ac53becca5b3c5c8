// The maths of dd2-method.md §1.3-§1.4, batched and differentiable in x:
//  - TeacherLogProbs: CFG, temperature, top-k, top-p applied to logits, exactly as LlamaGen
//    (logits = uncond + cfg (cond - uncond); HF-style filtering), giving log p with -inf on
//    masked entries.
//  - The closed-form conditional score of the Gaussian mixture sum_j p_j N(x; (1-t) c_j, t^2 I):
//    posterior log-weights, denoiser x0, score and velocity, for x of shape [..., C], t
//    broadcastable to x's leading dims, log_p [..., V] and a codebook [V, C].
// Pure tensor functions; thread-compatible.
#ifndef DD2_TRAINING_CLOSED_FORM_H_
#define DD2_TRAINING_CLOSED_FORM_H_

#include <torch/torch.h>

namespace dd2 {

struct SamplingConfig {
  double cfg = 1.0;          // 1: no guidance
  double temperature = 1.0;
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
};

// cond/uncond: [..., V] logits. uncond may be undefined when cfg == 1.
torch::Tensor TeacherLogProbs(const torch::Tensor& cond, const torch::Tensor& uncond,
                              const SamplingConfig& config);

// log w_j(x,t) = log_softmax_j(log p_j - ||x - (1-t) c_j||^2 / (2 t^2)); shape [..., V].
torch::Tensor PosteriorLogWeights(const torch::Tensor& x, const torch::Tensor& t,
                                  const torch::Tensor& log_p, const torch::Tensor& codebook);

// E[q | x_t] = sum_j w_j c_j; shape [..., C].
torch::Tensor Denoiser(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                       const torch::Tensor& codebook);

// s = -(x - (1-t) x0) / t^2.
torch::Tensor Score(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                    const torch::Tensor& codebook);

// v = (x - x0) / t = E[eps - q | x_t].
torch::Tensor Velocity(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& log_p,
                       const torch::Tensor& codebook);

// log sum_j p_j N(x; (1-t) c_j, t^2 I), the density whose gradient Score is (for tests).
torch::Tensor MixtureLogDensity(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& log_p, const torch::Tensor& codebook);

}  // namespace dd2

#endif  // DD2_TRAINING_CLOSED_FORM_H_
