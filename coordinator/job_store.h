// JobStore: the coordinator's durable state. SqliteJobStore is production; InMemoryJobStore
// serves tests; both pass tests/coordinator/job_store_conformance_test.cc.
// Not thread-safe: owned by the coordinator loop thread.
#ifndef DD2_COORDINATOR_JOB_STORE_H_
#define DD2_COORDINATOR_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/records.h"

namespace dd2 {

struct EventFilter {
  std::string run_id;  // empty: any
  std::string job_id;  // empty: any
  std::string kind;    // empty: any
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Applies every write of `tx` in one transaction, or none of them.
  // AlreadyExists (nothing applied) when a new run reuses another run's submission_id;
  // Unavailable/Internal when the database fails.
  virtual absl::Status Apply(const StoreTx& tx) = 0;

  // Every run, job, attempt, worker and checkpoint, each list ordered by its key.
  virtual absl::StatusOr<StoreSnapshot> Load() = 0;

  // Events matching `filter`, in the order they were appended.
  virtual absl::StatusOr<std::vector<EventRecord>> Events(const EventFilter& filter) = 0;

  // Metrics of one job, ordered by (key, step).
  virtual absl::StatusOr<std::vector<MetricRecord>> Metrics(const std::string& job_id) = 0;

  // The newest (highest-step) metric of every (job, key), ordered by (job, key): what the
  // coordinator shows as a job's metrics, reloaded at start-up.
  virtual absl::StatusOr<std::vector<MetricRecord>> LatestMetrics() = 0;
};

std::unique_ptr<JobStore> NewInMemoryJobStore();

// Opens (creating if needed) the SQLite file at `path` in WAL mode and applies pending
// migrations. FailedPrecondition when the file's schema is newer than this binary knows.
// A write waits up to `busy_timeout_ms` for another connection's lock; then Apply fails
// Unavailable ("database busy"), as on an I/O error, and ResourceExhausted on a full disk,
// with nothing applied.
absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path, int busy_timeout_ms = 5000);

}  // namespace dd2

#endif  // DD2_COORDINATOR_JOB_STORE_H_
