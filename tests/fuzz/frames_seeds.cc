// Writes the seed corpus of frames_fuzz: real message sequences (a worker registering, a run
// submitted, scheduled, reported on and queried; the same with keyed roles; a sweep) in
// frames_fuzz's input format. Usage: frames_seeds DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/curve_keys.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "common/sweep.h"

namespace dd2 {
namespace {

constexpr char kRun[] = R"(
name: seed
jobs:
  - {name: a, type: sleep, params: {seconds: 1, steps: 4, checkpoint_every: 2}, retention: {keep_latest: 1}}
  - {name: b, type: sleep, after: [a], resources: {workers: 2}}
)";

constexpr char kSweep[] = R"(
name: sw
jobs:
  - {name: a, type: sleep, params: {seconds: 1}}
sweep:
  grid: {jobs.a.params.seconds: [1, 2]}
  seeds: 2
)";

struct Frame {
  Role role;
  proto::Envelope env;
};

std::string Encode(const std::vector<Frame>& frames) {
  std::string out;
  for (const auto& f : frames) {
    const std::string bytes = EncodeEnvelope(f.env);
    out.push_back(static_cast<char>(static_cast<int>(f.role)));
    out.push_back(static_cast<char>(bytes.size() & 0xff));
    out.push_back(static_cast<char>(bytes.size() >> 8));
    out += bytes;
  }
  return out;
}

std::vector<Frame> RunSequence(Role worker, Role client, Role admin) {
  std::vector<Frame> f;
  auto add = [&](Role r, proto::Envelope e, const std::string& sender) {
    e.set_sender(sender);
    e.set_request_id(f.size() + 1);
    f.push_back({r, std::move(e)});
  };
  proto::Envelope e;
  auto* h = e.mutable_hello();
  h->set_worker_id("w1");
  h->set_host("h");
  h->set_device("cpu");
  h->set_slots(2);
  add(worker, e, "w1");
  e.Clear();
  *e.mutable_submit()->mutable_spec() = *ParseRunSpec(kRun, "seed.yaml");
  e.mutable_submit()->set_submission_id("s1");
  add(client, e, "dd2ctl");
  e.Clear();
  e.mutable_heartbeat()->set_worker_id("w1");
  e.mutable_heartbeat()->add_running_attempts("seed-1/a#1");
  add(worker, e, "w1");
  e.Clear();
  e.mutable_attempt_started()->set_attempt_id("seed-1/a#1");
  add(worker, e, "w1");
  e.Clear();
  auto* p = e.mutable_progress();
  p->set_attempt_id("seed-1/a#1");
  p->set_step(2);
  p->set_total(4);
  auto* m = p->add_metrics();
  m->set_key("loss");
  m->set_value(0.5);
  add(worker, e, "w1");
  e.Clear();
  e.mutable_log_chunk()->set_attempt_id("seed-1/a#1");
  e.mutable_log_chunk()->set_data("step 2/4\n");
  add(worker, e, "w1");
  e.Clear();
  auto* c = e.mutable_checkpoint_committed();
  c->set_attempt_id("seed-1/a#1");
  c->set_step(2);
  c->set_path("/tmp/elsewhere/ckpt.pt");
  c->set_sha256(std::string(64, 'a'));
  add(worker, e, "w1");
  e.Clear();
  e.mutable_attempt_finished()->set_attempt_id("seed-1/a#1");
  add(worker, e, "w1");
  for (auto* req : {"status", "jobs", "logs", "checkpoints", "workers", "cancel", "shutdown"}) {
    e.Clear();
    const std::string r = req;
    if (r == "status") e.mutable_status()->set_run_id("seed-1");
    if (r == "jobs") e.mutable_jobs()->set_run_id("seed-1");
    if (r == "logs") e.mutable_logs()->set_job_id("seed-1/a");
    if (r == "checkpoints") e.mutable_checkpoints()->set_run_id("seed-1");
    if (r == "workers") e.mutable_workers();
    if (r == "cancel") e.mutable_cancel()->set_target("seed-1");
    if (r == "shutdown") e.mutable_shutdown();
    add(r == "shutdown" ? admin : client, e, "dd2ctl");
  }
  return f;
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: frames_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::ofstream(dir + "/local-run", std::ios::binary) << Encode(RunSequence(Role::kLocal, Role::kLocal, Role::kLocal));
  std::ofstream(dir + "/keyed-run", std::ios::binary)
      << Encode(RunSequence(Role::kWorker, Role::kClient, Role::kAdmin));
  std::ofstream(dir + "/wrong-roles", std::ios::binary)
      << Encode(RunSequence(Role::kClient, Role::kWorker, Role::kClient));
  proto::Envelope e;
  *e.mutable_sweep_submit()->mutable_sweep() = *ParseSweep(kSweep, "sweep.yaml");
  e.mutable_sweep_submit()->set_submission_id("sw1");
  std::ofstream(dir + "/sweep", std::ios::binary) << Encode({{Role::kClient, e}});
  return 0;
}

}  // namespace
}  // namespace dd2

int main(int argc, char** argv) { return dd2::Main(argc, argv); }
