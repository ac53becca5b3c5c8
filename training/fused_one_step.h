// FusedOneStep: DD2 one-step sampling on the CPU for a generator of our architecture (backbone
// arch dd2): the function ArDiffusion::Generate computes, to float rounding, as BLAS GEMMs on
// weights copied at construction with plain loops between them, without LibTorch's per-op
// dispatch (activations and the softmax stay LibTorch's vectorised ops, one per buffer). The
// head's modulation layers, which all read the same conditioning, are one GEMM.
// With threads > 1, every sample's rows are split into that many equal parts computed on as
// many threads (the caller's and helpers it owns, which spin briefly between calls): the head
// works row by row and the backbone meets once per layer for the keys.
// Weights are copied once: make a new one after the generator's weights change.
// Not thread-safe (scratch buffers).
#ifndef DD2_TRAINING_FUSED_ONE_STEP_H_
#define DD2_TRAINING_FUSED_ONE_STEP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "training/distill.h"

namespace dd2 {

class FusedOneStep {
 public:
  // Whether `generator` can run so: backbone arch dd2, float32 weights on the CPU.
  static bool Supports(ArDiffusion& generator);
  explicit FusedOneStep(ArDiffusion& generator, int threads = 1);
  ~FusedOneStep();
  FusedOneStep(const FusedOneStep&) = delete;
  FusedOneStep& operator=(const FusedOneStep&) = delete;

  // classes [B] (long), eps [B, n, C] (float, CPU) -> tokens [B, n, C] = eps - v(eps, 1, f(eps_<i)).
  torch::Tensor Generate(const torch::Tensor& classes, const torch::Tensor& eps);

 private:
  // A linear layer as blocks of at most kBlock outputs, each block's weight transposed and
  // contiguous ([in, block]): OpenBLAS's small-matrix GEMM runs such a block on 49 rows at
  // 100 GFLOP/s here, against 70-80 for the whole [out, in] weight (README "Speed").
  struct Linear {
    std::vector<torch::Tensor> blocks;  // [in, <= kBlock] each
    torch::Tensor bias;                 // [out]
    int64_t in = 0, out = 0;
  };
  static constexpr int64_t kBlock = 128;
  // weight [out, in], bias [out] -> Linear.
  static Linear MakeLinear(const torch::Tensor& weight, const torch::Tensor& bias);
  struct Norm {
    torch::Tensor weight, bias;  // undefined: no affine
  };
  struct Layer {
    Norm norm1, norm2;
    Linear qkv, proj, fc1, fc2;
  };
  struct HeadBlock {
    Linear fc1, fc2;
  };

  // y[rows, out] = x[rows, in] W^T + b, or y += that with `add`.
  static void Apply(const Linear& l, const float* x, int64_t rows, float* y, bool add);
  // y[rows, width] = LayerNorm(x) (times weight, plus bias, where given).
  static void LayerNorm(const Norm& norm, const float* x, int64_t rows, int64_t width, float* y);
  class Team;
  // One sample, rows r0..r1-1: features f [n, width] of the noise eps [n, C] under `cls`.
  void Features(int64_t cls, const float* eps, int64_t r0, int64_t r1, float* f);
  // One sample, rows r0..r1-1: out [n, C] = eps - v(eps, 1, f).
  void Head(const float* eps, const float* f, int64_t r0, int64_t r1, float* out);

  int64_t tokens_, width_, heads_, code_dim_, head_width_, classes_;
  torch::Tensor class_embed_, pos_embed_;  // [classes + 1, width], [tokens, width]
  Linear token_in_;
  std::vector<Layer> layers_;
  Norm final_norm_;
  torch::Tensor time_;  // the head's time vector at t = 1: [head_width]
  Linear input_, cond_, modulations_;  // modulations_: every block's mod, then final_mod, as one
  std::vector<HeadBlock> blocks_;
  Linear out_;
  // Scratch, sized for one sample; each part uses its own rows. Scores are [query, head, key].
  std::vector<float> x_, a_, qkv_[2], scores_, probs_, y_, hidden_, features_, h_, c_, m_, t1_, t2_;
  std::unique_ptr<Team> team_;  // threads > 1
};

}  // namespace dd2

#endif  // DD2_TRAINING_FUSED_ONE_STEP_H_
