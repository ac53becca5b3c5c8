// Evaluation of token samplers: a sampler produces C-dim token vectors (on or off the
// codebook) per class; the tokenizer's decoder renders them; the feature network scores them.
// TokenSampler is the plug-in point for part 2's one-step and multi-step samplers.
// Not thread-safe (holds modules).
#ifndef DD2_TRAINING_EVAL_H_
#define DD2_TRAINING_EVAL_H_

#include <map>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "training/data.h"
#include "training/distill.h"
#include "training/models.h"

namespace dd2 {

class TokenSampler {
 public:
  virtual ~TokenSampler() = default;
  // classes [B] -> token vectors [B, tokens, C], on the device of `classes` (the models'); the
  // generator is a CPU one.
  virtual torch::Tensor Sample(const torch::Tensor& classes, at::Generator& generator) = 0;
};

// The teacher's AR sampling with a KV cache (CFG, top-k, top-p, temperature from `sampling`).
std::unique_ptr<TokenSampler> MakeTeacherSampler(ArTransformer teacher, torch::Tensor codebook,
                                                 SamplingConfig sampling);

// The set-prediction baseline: each token drawn independently from the teacher's per-position
// marginal given the class, estimated from `marginal_samples` teacher samples.
std::unique_ptr<TokenSampler> MakeSetPredictionSampler(ArTransformer teacher, torch::Tensor codebook,
                                                       SamplingConfig sampling, int64_t marginal_samples,
                                                       uint64_t seed);

// DD2 one-step: x = eps - v(eps, 1, f(eps_<i)), one network evaluation.
std::unique_ptr<TokenSampler> MakeOneStepSampler(ArDiffusion generator, int64_t code_dim);

// DD2 multi-step (Alg. 4): the one-step sample, then the teacher regenerates the last k - 1
// tokens by ordinary AR sampling given the prefix (snapped to the codebook when `snap`).
std::unique_ptr<TokenSampler> MakeMultiStepSampler(ArDiffusion generator, ArTransformer teacher, torch::Tensor codebook,
                                                   SamplingConfig sampling, int64_t k, bool snap);

// The stage-1 AR-diffusion model as a sampler: token by token, `steps` Euler steps of its
// velocity from t = 1 to 0 (optionally snapping each finished token to the codebook).
std::unique_ptr<TokenSampler> MakeEulerSampler(ArDiffusion model, int64_t steps, torch::Tensor codebook, bool snap);

struct EvalOptions {
  int64_t samples = 1000;
  int64_t batch = 250;
  uint64_t seed = 0;
  std::string grid_path;  // PNG, 10 classes x 10 samples; empty: none
};

// fid, inception_score, precision, recall, class_accuracy (only with `features` and `real`:
// Fashion-MNIST tokenizers), latency_ms_b1, latency_ms_b256
// (per image), speedup_vs_teacher_b1 and token_speedup_vs_teacher_b1 (decoding excluded) when
// `teacher` is given (timed side by side: teacher, sampler, teacher, on the same threads; 1.0
// when `teacher` is `&sampler`), codebook_distance (mean distance of sampled vectors to their nearest
// codebook entry), and with `likelihood_teacher` teacher_nll: the teacher's negative
// log-likelihood per token (nats, class-conditional, no CFG) of the samples snapped to their
// nearest codes, the "generative perplexity" of discrete-diffusion distillation papers (the
// teacher sampler's own value is the reference; lower is more teacher-like, and it sees how
// tokens fit together, which FID on classifier features hardly does). Runs on the tokenizer's
// device; `real` may live on the CPU. The grid is gray or RGB as the tokenizer decodes.
absl::StatusOr<std::map<std::string, double>> Evaluate(TokenSampler& sampler, TokenSampler* teacher, Tokenizer& tokenizer,
                                                       FeatureNet* features, const ImageSet* real,
                                                       const EvalOptions& options,
                                                       ArTransformer* likelihood_teacher = nullptr);

// The teacher's mean NLL per token (nats) of `codes` [B, tokens] (codebook indices) given `classes`.
double TeacherNll(ArTransformer& teacher, const torch::Tensor& codebook, const torch::Tensor& classes,
                  const torch::Tensor& codes);

}  // namespace dd2

#endif  // DD2_TRAINING_EVAL_H_
