// Job identity for memoization (DESIGN.md, Jobs): the sha256 of a job's type, its type's
// version, its resolved params minus the keys that only say where or how it is scheduled
// (device, collective_timeout_s; priority and retries are not params) and those its type marks
// unused for these params (ParamSpec::used_when: an eval's `generator` outside the dd2
// samplers), its gang size, and the identities of the jobs it reads: those in `after` and those
// its remaining params name. Two jobs with one
// identity compute the same outputs, so a sweep trains its shared upstream stages once. Pure;
// thread-safe.
#ifndef DD2_COORDINATOR_JOB_IDENTITY_H_
#define DD2_COORDINATOR_JOB_IDENTITY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dd2 {

struct IdentityInput {
  std::string name;
  std::string type;
  std::string params_json;
  int64_t workers = 1;
  std::vector<std::string> after;  // job names in the same run
};

// The identity of every job of one run, by name; "" for a job whose references form a cycle or
// whose params are not a JSON object (such a job is never reused).
std::map<std::string, std::string> JobIdentities(const std::vector<IdentityInput>& jobs);

}  // namespace dd2

#endif  // DD2_COORDINATOR_JOB_IDENTITY_H_
