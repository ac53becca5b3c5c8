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
#include "training/models.h"

namespace dd2 {

class TokenSampler {
 public:
  virtual ~TokenSampler() = default;
  // classes [B] -> token vectors [B, tokens, C].
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

struct EvalOptions {
  int64_t samples = 1000;
  int64_t batch = 250;
  uint64_t seed = 0;
  std::string grid_path;  // PNG, 10 classes x 10 samples; empty: none
};

// fid, inception_score, precision, recall, class_accuracy, latency_ms_b1, latency_ms_b256
// (per image), speedup_vs_teacher_b1 (when `teacher` is given), codebook_distance (mean
// distance of sampled vectors to their nearest codebook entry).
absl::StatusOr<std::map<std::string, double>> Evaluate(TokenSampler& sampler, TokenSampler* teacher, VqVae& tokenizer,
                                                       FeatureNet& features, const ImageSet& real,
                                                       const EvalOptions& options);

}  // namespace dd2

#endif  // DD2_TRAINING_EVAL_H_
