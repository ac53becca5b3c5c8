#include "tests/training/train_test_util.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/testing/test_util.h"

namespace dd2::testing {

const char kTinyDd2[] = R"("batch": 8, "m": 2, "cfg": 2.0)";
Stage TinyTokenizer() {
  return {"tokenizer", "tokenizer",
          R"({"steps": 4, "batch": 8, "channels": 16, "codebook_size": 32, "train_limit": 256})"};
}
Stage TinyTeacher() {
  return {"teacher", "teacher", R"({"steps": 4, "batch": 8, "width": 16, "heads": 2, "train_limit": 256})"};
}
Stage TinyTune() {
  return {"tune", "tune",
          std::string(R"({"steps": 4, "head_steps": 2, "pool": 20, "head_width": 16, )") + kTinyDd2 + "}"};
}
Stage TinyDistill() { return {"distill", "distill", std::string(R"({"steps": 4, "k": 2, )") + kTinyDd2 + "}"}; }

std::vector<std::string> JobArgs(const std::string& type, const std::string& params, const std::string& run_dir,
                                 const std::string& job, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kTrain, "job-run", "--type", type, "--params", params, "--attempt-id",
                                   job + "#1", "--run-dir", run_dir, "--job-name", job};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

std::string RunToEnd(const std::vector<std::string>& argv) {
  auto r = RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

namespace {

void Pair(torch::serialize::InputArchive& a, torch::serialize::InputArchive& b, const std::string& at,
          std::vector<TensorPair>& out) {
  for (const auto& key : a.keys()) {
    torch::Tensor ta, tb;
    if (a.try_read(key, ta)) {
      b.try_read(key, tb);
      out.push_back({at + key, ta, tb});
      continue;
    }
    torch::serialize::InputArchive sa, sb;
    if (a.try_read(key, sa) && b.try_read(key, sb)) Pair(sa, sb, at + key + "/", out);
  }
}

}  // namespace

std::vector<TensorPair> PairTensors(const std::string& a, const std::string& b) {
  torch::serialize::InputArchive aa, bb;
  aa.load_from(a);
  bb.load_from(b);
  std::vector<TensorPair> out;
  Pair(aa, bb, "", out);
  return out;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace dd2::testing
