// What every dd2ctl command shares: exit codes, error printing, JSON requests to the
// coordinator, tables, progress bars and metric text. Thread-compatible.
#ifndef DD2_CLUSTER_CTL_OUTPUT_H_
#define DD2_CLUSTER_CTL_OUTPUT_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/client.h"

namespace dd2 {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitInvalid = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitUnreachable = 4;
inline constexpr int kExitDenied = 5;  // a key refused, or a message the key's role may not send

// 2 invalid input, 3 not found, 4 coordinator unreachable, 5 refused (key or role), 1 anything else.
int ExitCodeFor(const absl::Status& st);
// Prints "dd2ctl: MESSAGE" to stderr and returns ExitCodeFor(st).
int Fail(const absl::Status& st);
// Sends `req` and parses the JsonReply.
absl::StatusOr<nlohmann::json> CallJson(CoordinatorClient& client, proto::Envelope req);
// "[#####...............]  25%"
std::string Bar(double fraction, int width = 20);
// Prints rows as columns padded to the widest cell.
void PrintTable(const std::vector<std::vector<std::string>>& rows);
// A job document's completed fraction: 1 when succeeded, else step / total.
double JobFraction(const nlohmann::json& job);
// "key=value ..." of the numeric members of a metrics object ("" for anything else).
std::string MetricsText(const nlohmann::json& metrics);
// Whether a run state is final.
bool Terminal(const std::string& state);

}  // namespace dd2

#endif  // DD2_CLUSTER_CTL_OUTPUT_H_
