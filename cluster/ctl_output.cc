#include "cluster/ctl_output.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dd2 {

using Json = nlohmann::json;

int ExitCodeFor(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kOk: return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition: return kExitInvalid;
    case absl::StatusCode::kNotFound: return kExitNotFound;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded: return kExitUnreachable;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied: return kExitDenied;
    default: return kExitFailed;
  }
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "dd2ctl: %s\n", std::string(st.message()).c_str());
  return ExitCodeFor(st);
}

absl::StatusOr<Json> CallJson(CoordinatorClient& client, proto::Envelope req) {
  auto reply = client.Call(std::move(req));
  if (!reply.ok()) return reply.status();
  Json j = Json::parse(reply->json_reply().json(), nullptr, false);
  if (j.is_discarded()) return absl::InternalError("coordinator sent invalid JSON");
  return j;
}

std::string Bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  int filled = static_cast<int>(fraction * width + 0.5);
  return absl::StrCat("[", std::string(filled, '#'), std::string(width - filled, '.'), "] ",
                      absl::StrFormat("%3d%%", static_cast<int>(fraction * 100 + 0.5)));
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

double JobFraction(const Json& j) {
  if (j["state"] == "succeeded") return 1.0;
  double total = j.value("total", 0);
  return total > 0 ? j.value("step", 0) / total : 0.0;
}

std::string MetricsText(const Json& m) {
  std::string out;
  if (!m.is_object()) return out;
  for (auto& [k, v] : m.items()) {
    if (v.is_number()) absl::StrAppend(&out, out.empty() ? "" : " ", k, "=", absl::StrFormat("%.4g", v.get<double>()));
  }
  return out;
}

bool Terminal(const std::string& s) { return s == "succeeded" || s == "failed" || s == "cancelled" || s == "stopped"; }

}  // namespace dd2
