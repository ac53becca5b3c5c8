// LlamaGen's models against the reference fixtures that LlamaGen's own code wrote
// (../shared/fixtures/llamagen, README there): the checkpoint files read as published, the
// GPT's teacher-forcing and KV-cached logits, the VQ model's codes and decodes.
#include "training/llamagen.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/testing/test_util.h"
#include "training/torch_file.h"

namespace dd2 {
namespace {

const std::string kFixtures = std::string(DD2_SOURCE_DIR) + "/../shared/fixtures/llamagen/";

TensorDict Read(const std::string& name) {
  auto d = ReadTorchStateDict(kFixtures + name);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : TensorDict{};
}

template <size_t N>
std::string Bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// max |a - b| / max |b|
double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

LlamaGenTransformer FixtureGpt(const TensorDict& state) {
  TransformerOptions given;
  given.heads = 4;
  given.tokens = 16;
  given.code_dim = 8;
  auto o = LlamaGenOptionsFromStateDict("gpt_tiny_c2i.pt", state, given);
  EXPECT_TRUE(o.ok()) << o.status();
  LlamaGenTransformer gpt(*o);
  auto st = LoadStateDict("gpt_tiny_c2i.pt", state, *gpt);
  EXPECT_TRUE(st.ok()) << st;
  gpt->eval();
  return gpt;
}

LlamaGenVq FixtureVq(const TensorDict& state) {
  auto o = LlamaGenVqOptionsFromStateDict("vq_tiny.pt", state);
  EXPECT_TRUE(o.ok()) << o.status();
  LlamaGenVq vq(*o);
  auto st = LoadStateDict("vq_tiny.pt", state, *vq, {"quantize.codebook_used"});
  EXPECT_TRUE(st.ok()) << st;
  vq->eval();
  return vq;
}

TEST(TorchFileTest, ReadsLlamaGensCheckpointWithEveryKeyAndShape) {
  TensorDict state = Read("gpt_tiny_c2i.pt");
  std::ifstream keys(kFixtures + "gpt_tiny_c2i.keys.tsv");
  std::string line;
  size_t n = 0;
  while (std::getline(keys, line)) {
    const auto tab = line.find('\t');
    const std::string key = line.substr(0, tab);
    ASSERT_TRUE(state.count(key)) << key;
    std::string shape = "[";
    for (int64_t d = 0; d < state[key].dim(); ++d) shape += (d ? ", " : "") + std::to_string(state[key].size(d));
    EXPECT_EQ(line.substr(tab + 1, line.rfind('\t') - tab - 1), shape + "]") << key;
    EXPECT_EQ(state[key].scalar_type(), torch::kFloat32);
    ++n;
  }
  EXPECT_EQ(n, 18u);
  EXPECT_EQ(state.size(), n);
}

TEST(TorchFileTest, TruncatedArchiveAndHostilePicklesAreErrorsNamingTheFile) {
  testing::TempDir dir;
  std::ifstream in(kFixtures + "gpt_tiny_c2i.pt", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string cut = dir.path() + "/cut.pt";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  auto d = ReadTorchStateDict(cut);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find(cut), std::string::npos) << d.status();
  EXPECT_FALSE(ReadTorchStateDict(dir.path() + "/none.pt").ok());

  StorageReader storage = [](const std::string& key, torch::ScalarType dtype) -> absl::StatusOr<torch::Tensor> {
    return torch::zeros({4}, torch::TensorOptions().dtype(dtype));
  };
  // {'w': a tensor of 4 floats from offset 2 of a 4-float storage}: past the storage's end.
  const std::string past_end = Bytes(
      "\x80\x02}X\x01\x00\x00\x00" "w" "ctorch._utils\n_rebuild_tensor_v2\n(("
      "X\x07\x00\x00\x00" "storage" "ctorch\nFloatStorage\n" "X\x01\x00\x00\x00" "0"
      "X\x03\x00\x00\x00" "cpu" "K\x04" "tQ" "K\x02" "K\x04\x85" "K\x01\x85" "\x89)tRs.");
  for (const std::string& hostile : {Bytes("garbage"), Bytes("\x80\x02}q\x00"), past_end, Bytes("\x80\x02h\x07."),
                                     Bytes("\x80\x02s."), Bytes("\x80\x02\xff")}) {
    auto r = UnpickleStateDict("hostile.pt", hostile, storage);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("hostile.pt"), std::string::npos) << r.status();
  }
  EXPECT_NE(UnpickleStateDict("hostile.pt", past_end, storage).status().message().find(
                "a tensor reaches element 5 of a storage of 4"),
            std::string::npos);
}

TEST(LlamaGenGptTest, TeacherForcingAndCachedLogitsMatchLlamaGens) {
  TensorDict io = Read("gpt_tiny_c2i_io.pt");
  LlamaGenTransformer gpt = FixtureGpt(Read("gpt_tiny_c2i.pt"));
  EXPECT_EQ(gpt->options().width, 64);
  EXPECT_EQ(gpt->options().layers, 2);
  EXPECT_EQ(gpt->options().vocab, 64);
  EXPECT_EQ(gpt->options().classes, 10);
  EXPECT_EQ(gpt->options().ffn_hidden, 192);
  torch::NoGradGuard no_grad;
  auto logits = gpt->TokenLogits(io["cond"], io["idx"]);
  ASSERT_EQ(logits.sizes(), io["logits"].sizes());
  const double forcing = RelativeError(logits, io["logits"]);
  EXPECT_LT(forcing, 1e-4);
  KvCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t i = 0; i < 16; ++i) {
    steps.push_back(gpt->TokenStep(io["cond"], i == 0 ? torch::Tensor() : io["idx"].select(1, i - 1), i, cache));
  }
  const double cached = RelativeError(torch::stack(steps, 1), io["cached_logits"]);
  EXPECT_LT(cached, 1e-4);
  std::printf("relative error: teacher forcing %.2e, KV-cached %.2e\n", forcing, cached);
}

TEST(LlamaGenGptTest, TheTeacherInterfaceOnCodebookVectorsGivesTheSameLogits) {
  TensorDict io = Read("gpt_tiny_c2i_io.pt");
  LlamaGenTransformer gpt = FixtureGpt(Read("gpt_tiny_c2i.pt"));
  LlamaGenVq vq = FixtureVq(Read("vq_tiny.pt"));
  torch::NoGradGuard no_grad;
  auto codebook = vq->Codebook();
  ArTransformer teacher(gpt.ptr());
  EXPECT_THROW(teacher->forward(io["cond"], codebook.index_select(0, io["idx"].reshape(-1)).view({3, 15, 8})),
               c10::Error);  // no codebook to snap to yet
  gpt->SetCodebook(codebook);
  auto vectors = codebook.index_select(0, io["idx"].reshape(-1)).view({3, 15, 8});
  EXPECT_LT(RelativeError(teacher->forward(io["cond"], vectors), io["logits"]), 1e-4);
  KvCache cache;
  auto first = teacher->Step(io["cond"], torch::Tensor(), 0, cache);
  auto second = teacher->Step(io["cond"], vectors.select(1, 0), 1, cache);
  EXPECT_LT(RelativeError(second, io["cached_logits"].select(1, 1)), 1e-4);
  EXPECT_LT(RelativeError(first, io["cached_logits"].select(1, 0)), 1e-4);
}

TEST(LlamaGenGptTest, MissingUnexpectedAndMisshapenKeysAreNamed) {
  TensorDict state = Read("gpt_tiny_c2i.pt");
  LlamaGenTransformer gpt = FixtureGpt(state);
  TensorDict missing = state;
  missing.erase("layers.1.feed_forward.w2.weight");
  auto st = LoadStateDict("c2i.pt", missing, *gpt);
  EXPECT_EQ(st.message(), "c2i.pt: missing key layers.1.feed_forward.w2.weight");
  TensorDict misshapen = state;
  misshapen["norm.weight"] = torch::ones({65});
  st = LoadStateDict("c2i.pt", misshapen, *gpt);
  EXPECT_EQ(st.message(), "c2i.pt: key norm.weight has shape [65], the model wants [64]");
  TensorDict extra = state;
  extra["layers.2.ffn_norm.weight"] = torch::ones({64});
  st = LoadStateDict("c2i.pt", extra, *gpt);
  EXPECT_EQ(st.message(), "c2i.pt: unexpected key layers.2.ffn_norm.weight [64]");
  TransformerOptions given;
  given.heads = 5;
  given.tokens = 16;
  auto o = LlamaGenOptionsFromStateDict("c2i.pt", state, given);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("c2i.pt"), std::string::npos);
  TensorDict no_table = state;
  no_table.erase("tok_embeddings.weight");
  given.heads = 4;
  EXPECT_EQ(LlamaGenOptionsFromStateDict("c2i.pt", no_table, given).status().message(),
            "c2i.pt: missing key tok_embeddings.weight");
}

TEST(LlamaGenVqTest, CodesAndDecodesMatchLlamaGens) {
  TensorDict io = Read("vq_tiny_io.pt");
  LlamaGenVq vq = FixtureVq(Read("vq_tiny.pt"));
  EXPECT_EQ(vq->options().channels, 32);
  EXPECT_EQ(vq->options().channel_mult, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(vq->options().res_blocks, 2);
  EXPECT_EQ(vq->options().z_channels, 32);
  EXPECT_EQ(vq->options().codebook_size, 64);
  torch::NoGradGuard no_grad;
  auto codes = vq->Quantize(vq->Encode(io["images"]));
  EXPECT_TRUE(torch::equal(codes, io["codes"].reshape({2, 16})));
  const double decoded = RelativeError(vq->DecodeCodes(io["codes"].reshape({2, 16})), io["decoded"]);
  EXPECT_LT(decoded, 1e-4);
  auto continuous = io["continuous"].flatten(2).transpose(1, 2);  // [2, 8, 4, 4] -> [2, 16, 8]
  auto decoded_continuous = vq->Decode(continuous);
  EXPECT_GT(decoded_continuous.abs().max().item<double>(), 0.01);
  EXPECT_GT((decoded_continuous - vq->DecodeCodes(io["codes"].reshape({2, 16}))).abs().max().item<double>(), 0.01);
  const double off_codebook = RelativeError(decoded_continuous, io["decoded_continuous"]);
  EXPECT_LT(off_codebook, 1e-4);
  std::printf("relative error: decode of codes %.2e, of continuous vectors %.2e\n", decoded, off_codebook);
}

TEST(LlamaGenVqTest, AMissingKeyIsNamed) {
  TensorDict state = Read("vq_tiny.pt");
  LlamaGenVq vq = FixtureVq(state);
  state.erase("decoder.conv_blocks.0.attn.2.proj_out.bias");
  EXPECT_EQ(LoadStateDict("vq.pt", state, *vq, {"quantize.codebook_used"}).message(),
            "vq.pt: missing key decoder.conv_blocks.0.attn.2.proj_out.bias");
}

}  // namespace
}  // namespace dd2
