// The networks of the DD2 pipeline on Fashion-MNIST, in LibTorch:
//  - VqVae: conv encoder to a 7x7 grid (28x28 images, downsampled 4x) or a 16x16 grid (images
//    padded to 32x32, downsampled 2x) of C-dim vectors, L2-normalised codebook of V entries
//    (LlamaGen-style), straight-through quantiser, conv decoder that accepts continuous,
//    off-codebook vectors and always returns 28x28 images (the 16x16 grid's are cropped).
//  - ArTransformer: the teacher interface, a class-conditional causal transformer over token
//    vectors in raster order (so continuous prefixes work); class id `num_classes` is the null
//    class for classifier-free guidance. Dd2Transformer is ours; LlamaGenTransformer
//    (training/llamagen.h) is LlamaGen's GPT. Sampling with and without a KV cache, batched.
//  - FeatureNet: a small CNN classifier whose penultimate features are the FID space.
// Modules are not thread-safe; use one per thread.
#ifndef DD2_TRAINING_MODELS_H_
#define DD2_TRAINING_MODELS_H_

#include <torch/torch.h>

#include "absl/status/status.h"
#include "training/closed_form.h"

namespace dd2 {

struct VqVaeOptions {
  int64_t codebook_size = 256;
  int64_t code_dim = 8;
  int64_t channels = 64;
  int64_t grid = 7;  // tokens per side: 7 or 16 (VqVaeImpl's constructor throws otherwise)
  double commitment = 0.25;
  int64_t tokens() const { return grid * grid; }
};

struct VqOutput {
  torch::Tensor reconstruction;  // [B, 1, 28, 28]
  torch::Tensor indices;         // [B, n], n = grid * grid
  torch::Tensor vq_loss;         // scalar
};

// The tokenizer interface that the teacher, tune, distill and eval jobs use: images to
// l2-normalised token vectors on a codebook and back. VqVae is ours (Fashion-MNIST);
// LlamaGenVq (training/llamagen.h) is LlamaGen's.
class TokenizerImpl : public torch::nn::Module {
 public:
  // L2-normalised encoder outputs of images: [B, n, C], raster order.
  virtual torch::Tensor Encode(const torch::Tensor& images) = 0;
  // The nearest codebook entries of latents [B, n, C]: [B, n].
  virtual torch::Tensor Quantize(const torch::Tensor& latents) = 0;
  // Any vectors, on or off the codebook: [B, n, C] -> images [B, ch, H, W] in the tokenizer's range.
  virtual torch::Tensor Decode(const torch::Tensor& vectors) = 0;
  // The L2-normalised codebook [V, C].
  virtual torch::Tensor Codebook() = 0;
  // Decoded images mapped to [0, 1] for pictures.
  virtual torch::Tensor Pixels(const torch::Tensor& decoded) = 0;
  // Whether decoded images are Fashion-MNIST's ([B, 1, 28, 28] in [0, 1]), which the feature
  // network scores (FID and the rest); other tokenizers' samples get no such scores.
  virtual bool fashion_mnist() const = 0;
};

class Tokenizer : public torch::nn::ModuleHolder<TokenizerImpl> {
 public:
  Tokenizer(std::nullptr_t) : ModuleHolder(nullptr) {}  // NOLINT: as TORCH_MODULE's holders
  Tokenizer(std::shared_ptr<TokenizerImpl> impl) : ModuleHolder(std::move(impl)) {}  // NOLINT
};

class VqVaeImpl : public TokenizerImpl {
 public:
  explicit VqVaeImpl(const VqVaeOptions& options);
  VqOutput forward(const torch::Tensor& images);
  // Images are [B, 1, 28, 28] in [0, 1]; Quantize is by cosine similarity.
  torch::Tensor Encode(const torch::Tensor& images) override;
  torch::Tensor Quantize(const torch::Tensor& latents) override;
  torch::Tensor Decode(const torch::Tensor& vectors) override;
  torch::Tensor Codebook() override;
  torch::Tensor Pixels(const torch::Tensor& decoded) override { return decoded.clamp(0, 1); }
  bool fashion_mnist() const override { return true; }
  // Dead-code restart: counts code use over a window (a buffer, so checkpoints keep it); at
  // the window's end every unused code is moved onto a random encoder output of `latents`.
  // Returns how many codes were restarted.
  int64_t TrackAndRestart(const torch::Tensor& indices, const torch::Tensor& latents, bool window_end,
                          at::Generator& generator);
  const VqVaeOptions& options() const { return options_; }

 private:
  VqVaeOptions options_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
  torch::nn::Embedding codebook_{nullptr};
  torch::Tensor usage_;
};
TORCH_MODULE(VqVae);

struct TransformerOptions {
  std::string arch = "dd2";  // "dd2" (Dd2TransformerImpl) or "llamagen" (LlamaGenTransformerImpl)
  int64_t vocab = 256;
  int64_t code_dim = 8;
  int64_t tokens = 49;
  int64_t classes = 10;
  int64_t width = 128;
  int64_t layers = 2;
  int64_t heads = 4;
  // llamagen only (training/llamagen.h says what each means).
  int64_t kv_heads = 0;        // 0: as many as heads
  int64_t ffn_hidden = 0;      // 0: LlamaGen's rule, find_multiple(int(8 * width / 3), 256)
  double norm_eps = 1e-5;
  double rope_base = 10000;
  std::string input = "linear";  // how token vectors enter: linear | mlp | embedding
  int64_t input_hidden = 0;      // mlp: hidden width (0: 4 x width)
};

// Whether `options` describe a model its architecture can build: width a multiple of heads;
// for llamagen also head width a multiple of 4 (2D rotary pairs), kv_heads dividing heads, a
// square token grid and an input of linear, mlp or embedding; for dd2 a linear input. The
// error names the option. ArTransformer's constructor throws it; jobs report it.
absl::Status ValidateTransformerOptions(const TransformerOptions& options);

// The side of a square grid of `tokens` tokens, or 0 when `tokens` is not a square.
int64_t GridSide(int64_t tokens);

// Per-layer keys and values of the positions seen so far.
struct KvCache {
  std::vector<torch::Tensor> keys, values;  // [B, H, T, Dh] per layer
};

// The teacher interface that tune, distill, align and eval use: a class-conditional causal
// transformer over token vectors in raster order; class id `options().classes` is the null
// class for classifier-free guidance. Two architectures implement it (ArTransformer's
// constructor picks by options.arch); both keep parameter names stable, so a backbone copies a
// teacher's parameters by name.
class ArTransformerImpl : public torch::nn::Module {
 public:
  // classes [B] (null class = options.classes), prefix [B, T, C] with T <= tokens - 1.
  // Returns logits [B, T + 1, V]: position i predicts token i given the class and tokens < i.
  torch::Tensor forward(const torch::Tensor& classes, const torch::Tensor& prefix) {
    return Output(Hidden(classes, prefix));
  }
  // The same positions' final hidden states [B, T + 1, width] (before the output head).
  virtual torch::Tensor Hidden(const torch::Tensor& classes, const torch::Tensor& prefix) = 0;
  // One step with a cache: `token_vector` is ignored at position 0 (the class) and is the
  // previous token's vector [B, C] after it.
  torch::Tensor Step(const torch::Tensor& classes, const torch::Tensor& token_vector, int64_t position,
                     KvCache& cache) {
    return Output(StepHidden(classes, token_vector, position, cache));
  }
  // The same step's final hidden state [B, width] (Hidden(...).select(1, position), cached).
  virtual torch::Tensor StepHidden(const torch::Tensor& classes, const torch::Tensor& token_vector, int64_t position,
                                   KvCache& cache) = 0;
  // Logits [..., V] of final hidden states [..., width].
  virtual torch::Tensor Output(const torch::Tensor& hidden) = 0;
  const TransformerOptions& options() const { return options_; }

 protected:
  explicit ArTransformerImpl(const TransformerOptions& options) : options_(options) {}
  TransformerOptions options_;
};

class ArTransformer : public torch::nn::ModuleHolder<ArTransformerImpl> {
 public:
  ArTransformer(std::nullptr_t) : ModuleHolder(nullptr) {}  // NOLINT: as TORCH_MODULE's holders
  ArTransformer(std::shared_ptr<ArTransformerImpl> impl) : ModuleHolder(std::move(impl)) {}  // NOLINT
  // A new model of options.arch (InvalidArgument-style c10::Error for an unknown one).
  explicit ArTransformer(const TransformerOptions& options);
};

// dd2's own architecture: learned positions, LayerNorm, GELU MLP, a Linear input layer.
class Dd2TransformerImpl : public ArTransformerImpl {
 public:
  explicit Dd2TransformerImpl(const TransformerOptions& options);
  torch::Tensor Hidden(const torch::Tensor& classes, const torch::Tensor& prefix) override;
  torch::Tensor StepHidden(const torch::Tensor& classes, const torch::Tensor& token_vector, int64_t position,
                           KvCache& cache) override;
  torch::Tensor Output(const torch::Tensor& hidden) override { return head_->forward(hidden); }

 private:
  torch::Tensor Embed(const torch::Tensor& classes, const torch::Tensor& prefix, int64_t offset);
  torch::Tensor Blocks(torch::Tensor x, KvCache* cache);

  torch::nn::Embedding class_embed_{nullptr}, pos_embed_{nullptr};
  torch::nn::Linear token_in_{nullptr}, head_{nullptr};
  torch::nn::LayerNorm final_norm_{nullptr};
  std::vector<torch::nn::LayerNorm> norm1_, norm2_;
  std::vector<torch::nn::Linear> qkv_, proj_, fc1_, fc2_;
};

// AR sampling of `classes.size(0)` token sequences; returns indices [B, tokens]. With
// use_cache false every step recomputes the whole prefix (the reference the cache is tested
// against); both consume `generator` identically.
torch::Tensor SampleAr(ArTransformer& model, const torch::Tensor& codebook, const torch::Tensor& classes,
                       const SamplingConfig& sampling, at::Generator& generator, bool use_cache = true);

// The teacher's per-position log-probabilities [B, T + 1, V] for given prefixes, with CFG etc.
torch::Tensor TeacherLogProbsFor(ArTransformer& model, const torch::Tensor& classes,
                                 const torch::Tensor& prefix, const SamplingConfig& sampling);

class FeatureNetImpl : public torch::nn::Module {
 public:
  FeatureNetImpl();
  torch::Tensor forward(const torch::Tensor& images);   // logits [B, 10]
  torch::Tensor Features(const torch::Tensor& images);  // [B, 128]
  torch::Tensor Classify(const torch::Tensor& features);  // features -> logits [B, 10]

 private:
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear out_{nullptr};
};
TORCH_MODULE(FeatureNet);

// A CPU generator seeded with `seed`.
at::Generator MakeGenerator(uint64_t seed);

}  // namespace dd2

#endif  // DD2_TRAINING_MODELS_H_
