// The coordinator's HTTP routes, as pure functions of a snapshot (coordinator/snapshot.h):
// Prometheus /metrics, the /api/v1 JSON documents (the same functions as dd2ctl's --json, from
// views.h) and the dashboard's files. The HTTP server (http_server.h) only moves bytes.
// Thread-compatible: a route reads its snapshot and, for metric series, a read-only store.
#ifndef DD2_COORDINATOR_HTTP_API_H_
#define DD2_COORDINATOR_HTTP_API_H_

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/records.h"
#include "coordinator/snapshot.h"

namespace dd2 {

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// Reads one job's metric rows (step, value) from the store.
using MetricSeries = std::function<absl::StatusOr<std::vector<MetricRecord>>(const std::string& job_id)>;

// GET routes (HEAD is answered like GET by the server, without the body):
//   /metrics                                  Prometheus text format 0.0.4
//   /api/v1/status, /api/v1/runs              = dd2ctl status --json
//   /api/v1/runs/RUN                          = dd2ctl status RUN --json
//   /api/v1/runs/RUN/jobs                     = dd2ctl jobs RUN --json
//   /api/v1/runs/RUN/checkpoints              = dd2ctl ckpt ls RUN --json
//   /api/v1/runs/RUN/metrics[?job=NAME]       metric series {"run", "metrics": [{job, key, step, value}]}
//   /api/v1/runs/RUN/jobs/JOB/samples.png     an eval's sample grid
//   /api/v1/workers                           = dd2ctl workers --json
//   /api/v1/sweeps, /api/v1/sweeps/SWEEP      = dd2ctl sweep ls / sweep status SWEEP --json
//   /, /assets/NAME                           the dashboard (files under `dashboard_dir`)
// Errors are JSON {"error": message} with 400, 404 or 405.
HttpReply Route(const CoordinatorSnapshot& s, std::string_view method, std::string_view target,
                const MetricSeries& series, const std::string& dashboard_dir);

// The /metrics document. Families and labels are listed in README ("Observability").
std::string PrometheusText(const CoordinatorSnapshot& s);

}  // namespace dd2

#endif  // DD2_COORDINATOR_HTTP_API_H_
