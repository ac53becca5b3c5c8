// LlamaGen's class-to-image models in LibTorch, with the parameter names of LlamaGen's own
// state dicts (FoundationVision/LlamaGen: autoregressive/models/gpt.py,
// tokenizer/tokenizer_image/vq_model.py), so that its published .pt files load by name:
//  - LlamaGenTransformerImpl: the GPT behind dd2's teacher interface (ArTransformerImpl).
//    Class embedding table with the null class last, one class position, RMSNorm, SwiGLU
//    feed-forward, grouped key/value heads, 2D rotary embeddings (the class position's queries
//    and keys are zeroed, as LlamaGen's cos = sin = 0 does), causal attention, a KV cache.
//    How token vectors enter (TransformerOptions::input): "embedding" is LlamaGen's own token
//    table; a vector is snapped to its nearest code of the codebook set by SetCodebook (exact
//    for codebook vectors: the teacher sampler, but no gradient and no meaning for noise);
//    "linear" and "mlp" read the vectors themselves (dd2's continuous-input adaptation, paper
//    App. E.4), through parameters named dd2_token_in.* that LlamaGen's files do not have.
//  - LlamaGenVqImpl: the VQ tokenizer (conv encoder/decoder with group norm and attention, an
//    l2-normalised codebook); Decode takes continuous, off-codebook vectors.
// Modules are not thread-safe; use one per thread.
#ifndef DD2_TRAINING_LLAMAGEN_H_
#define DD2_TRAINING_LLAMAGEN_H_

#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "training/models.h"
#include "training/torch_file.h"

namespace dd2 {

class LlamaGenBlockImpl;
class LlamaGenVqEncoderImpl;
class LlamaGenVqDecoderImpl;

// The published class-to-image presets (dim, layers, heads): B 768/12/12, L 1024/24/16,
// XL 1280/36/20, XXL 1536/48/24, XXXL 2560/48/40; vocab 16384, 256 tokens, 1,000 classes.
// NotFound for another name.
absl::StatusOr<TransformerOptions> LlamaGenPreset(const std::string& name);

// The GPT options a state dict determines (width, layers, vocab, classes, kv_heads, ffn_hidden),
// with `heads`, `tokens` and `code_dim`, which it does not, from `given`. Errors name `file` and
// the key that is missing or does not fit.
absl::StatusOr<TransformerOptions> LlamaGenOptionsFromStateDict(const std::string& file, const TensorDict& state,
                                                                const TransformerOptions& given);

// Copies `state` into `module` by name: every parameter and buffer of the module whose name does
// not start with "dd2_" must be in `state` with the same shape; every key of `state` must be
// the module's, or in `ignored`. Values are converted to the module's dtype. The error names
// `file` and the first key that is missing, unexpected or of another shape.
absl::Status LoadStateDict(const std::string& file, const TensorDict& state, torch::nn::Module& module,
                           const std::set<std::string>& ignored = {});

class LlamaGenTransformerImpl : public ArTransformerImpl {
 public:
  explicit LlamaGenTransformerImpl(const TransformerOptions& options);
  torch::Tensor Hidden(const torch::Tensor& classes, const torch::Tensor& prefix) override;
  torch::Tensor StepHidden(const torch::Tensor& classes, const torch::Tensor& token_vector, int64_t position,
                           KvCache& cache) override;
  torch::Tensor Output(const torch::Tensor& hidden) override { return output_->forward(hidden); }

  // LlamaGen's own entries on token ids (input "embedding" only): teacher-forcing logits
  // [B, T + 1, V] for ids [B, T]; one cached step (position 0 reads the class, later ones the
  // previous id [B]).
  torch::Tensor TokenLogits(const torch::Tensor& classes, const torch::Tensor& ids);
  torch::Tensor TokenStep(const torch::Tensor& classes, const torch::Tensor& id, int64_t position, KvCache& cache);

  // Token vectors [..., C] through the input layer: [..., width].
  torch::Tensor EmbedVectors(const torch::Tensor& vectors);

  // Input "embedding": the l2-normalised codebook [V, C] vectors are snapped to (a buffer,
  // dd2_codebook, saved with the model).
  void SetCodebook(const torch::Tensor& codebook);

 private:
  torch::Tensor Classes(const torch::Tensor& classes);   // [B] -> [B, 1, width]
  torch::Tensor Blocks(torch::Tensor x, KvCache* cache);  // [B, t, width] -> norm(h)
  std::pair<torch::Tensor, torch::Tensor> Rope(int64_t from, int64_t count, const torch::Device& device);

  torch::nn::Embedding cls_table_{nullptr}, tok_embeddings_{nullptr};
  torch::nn::Sequential token_in_{nullptr};
  torch::Tensor codebook_;
  bool codebook_seen_ = false;  // codebook_ was found set (loaded or SetCodebook) once
  std::vector<std::shared_ptr<LlamaGenBlockImpl>> blocks_;
  torch::Tensor norm_weight_;
  torch::nn::Linear output_{nullptr};
  torch::Tensor rope_cos_, rope_sin_;  // [1 + tokens, head_dim / 2], CPU; copied per device on use
};
TORCH_MODULE(LlamaGenTransformer);

struct LlamaGenVqOptions {
  int64_t channels = 128;                 // ch
  std::vector<int64_t> channel_mult = {1, 1, 2, 2, 4};
  int64_t res_blocks = 2;
  int64_t z_channels = 256;
  int64_t codebook_size = 16384;
  int64_t code_dim = 8;
};

// The options a VQ state dict determines (all of them). Errors name `file` and the key.
absl::StatusOr<LlamaGenVqOptions> LlamaGenVqOptionsFromStateDict(const std::string& file, const TensorDict& state);

class LlamaGenVqImpl : public TokenizerImpl {
 public:
  explicit LlamaGenVqImpl(const LlamaGenVqOptions& options);
  // Images [B, 3, H, W] in [-1, 1] -> l2-normalised latents [B, n, C], raster order.
  torch::Tensor Encode(const torch::Tensor& images) override;
  // Nearest code (smallest squared distance to the normalised codebook) of latents [B, n, C].
  torch::Tensor Quantize(const torch::Tensor& latents) override;
  // Any vectors [B, n, C] (n a square) -> images [B, 3, H, W] in [-1, 1]; no quantisation.
  torch::Tensor Decode(const torch::Tensor& vectors) override;
  // Codes [B, n] -> images, through the normalised codebook.
  torch::Tensor DecodeCodes(const torch::Tensor& codes);
  torch::Tensor Codebook() override;  // [V, C], l2-normalised
  torch::Tensor Pixels(const torch::Tensor& decoded) override { return ((decoded + 1) / 2).clamp(0, 1); }
  bool fashion_mnist() const override { return false; }
  const LlamaGenVqOptions& options() const { return options_; }

 private:
  LlamaGenVqOptions options_;
  std::shared_ptr<LlamaGenVqEncoderImpl> encoder_;
  std::shared_ptr<LlamaGenVqDecoderImpl> decoder_;
  torch::nn::Embedding codebook_{nullptr};
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
};
TORCH_MODULE(LlamaGenVq);

}  // namespace dd2

#endif  // DD2_TRAINING_LLAMAGEN_H_
