// SqliteJobStore: WAL mode, synchronous=NORMAL (durable across process crashes, which is the
// failure the coordinator is built to survive), busy_timeout, one transaction per Apply.
// Uses the SQLite C API directly through a small statement wrapper: SQLiteCpp is not packaged
// for our Debian, and the surface used here is a dozen statements.
#include <sqlite3.h>

#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/job_store.h"
#include "schemas/migrations.h"

namespace dd2 {
namespace {

// A SQLite result code as a status: busy/locked and I/O faults are Unavailable (the caller
// may try again: nothing was applied), a full disk ResourceExhausted, a constraint
// AlreadyExists, anything else Internal.
absl::Status SqliteError(int rc, const std::string& msg) {
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return absl::AlreadyExistsError(absl::StrCat("constraint failed: ", msg));
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return absl::UnavailableError(absl::StrCat("database busy: ", msg));
    case SQLITE_FULL: return absl::ResourceExhaustedError(absl::StrCat("disk full: ", msg));
    case SQLITE_IOERR: return absl::UnavailableError(absl::StrCat("I/O error: ", msg));
    default: return absl::InternalError(absl::StrCat("sqlite: ", msg));
  }
}

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, double v) {
    sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run() {
    int rc = Step();
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
    return SqliteError(rc, sqlite3_errmsg(db_));
  }
  std::string Text(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) { return sqlite3_column_double(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

absl::Status Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err); rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return SqliteError(rc, msg);
  }
  return absl::OkStatus();
}

class SqliteJobStore : public JobStore {
 public:
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  ~SqliteJobStore() override {
    statements_.clear();
    sqlite3_close(db_);
  }

  absl::Status Init(int busy_timeout_ms) {
    DD2_RETURN_IF_ERROR(Exec(db_, absl::StrCat("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                                               "PRAGMA foreign_keys=ON; PRAGMA busy_timeout=", busy_timeout_ms, ";")));
    Statement v(db_, "PRAGMA user_version");
    v.Step();
    int64_t version = v.Int(0);
    const auto& migrations = Migrations();
    int64_t latest = migrations.empty() ? 0 : migrations.back().version;
    if (version > latest) {
      return absl::FailedPreconditionError(
          absl::StrCat("database schema version ", version, " is newer than this coordinator's (",
                       latest, "); use a newer dd2-coordinator"));
    }
    for (const auto& m : migrations) {
      if (m.version <= version) continue;
      DD2_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
      absl::Status st = Exec(db_, m.sql);
      if (st.ok()) st = Exec(db_, absl::StrCat("PRAGMA user_version=", m.version));
      if (!st.ok()) {
        Exec(db_, "ROLLBACK").IgnoreError();
        return absl::InternalError(absl::StrCat("migration ", m.version, " failed: ", st.message()));
      }
      DD2_RETURN_IF_ERROR(Exec(db_, "COMMIT"));
    }
    return absl::OkStatus();
  }

  absl::Status Apply(const StoreTx& tx) override {
    if (tx.empty()) return absl::OkStatus();
    DD2_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
    absl::Status st = ApplyInTx(tx);
    if (!st.ok()) {
      Exec(db_, "ROLLBACK").IgnoreError();
      return st;
    }
    st = Exec(db_, "COMMIT");
    if (!st.ok()) Exec(db_, "ROLLBACK").IgnoreError();
    return st;
  }

  absl::StatusOr<StoreSnapshot> Load() override {
    StoreSnapshot s;
    Statement runs(db_, "SELECT id, submission_id, name, spec, state, priority, seq, created_ms, "
                        "finished_ms FROM runs ORDER BY id");
    while (runs.Step() == SQLITE_ROW) {
      s.runs.push_back({runs.Text(0), runs.Text(1), runs.Text(2), runs.Text(3), runs.Text(4),
                        runs.Int(5), runs.Int(6), runs.Int(7), runs.Int(8)});
    }
    Statement jobs(db_, "SELECT id, run_id, name, type, params_json, after_json, workers, device, "
                        "retries, priority, state, attempts, not_before_ms, step, total, failure, "
                        "updated_ms, identity, reused_from, outputs_path, outputs_sha256 FROM jobs ORDER BY id");
    while (jobs.Step() == SQLITE_ROW) {
      s.jobs.push_back({jobs.Text(0), jobs.Text(1), jobs.Text(2), jobs.Text(3), jobs.Text(4),
                        jobs.Text(5), jobs.Int(6), jobs.Text(7), jobs.Int(8), jobs.Int(9),
                        jobs.Text(10), jobs.Int(11), jobs.Int(12), jobs.Int(13), jobs.Int(14),
                        jobs.Text(15), jobs.Int(16), jobs.Text(17), jobs.Text(18), jobs.Text(19),
                        jobs.Text(20)});
    }
    Statement attempts(db_, "SELECT id, job_id, number, state, worker_ids, started_ms, finished_ms, "
                            "exit_code, signal, cause FROM attempts ORDER BY id");
    while (attempts.Step() == SQLITE_ROW) {
      s.attempts.push_back({attempts.Text(0), attempts.Text(1), attempts.Int(2), attempts.Text(3),
                            attempts.Text(4), attempts.Int(5), attempts.Int(6), attempts.Int(7),
                            attempts.Int(8), attempts.Text(9)});
    }
    Statement workers(db_, "SELECT id, host, device, device_index, slots, pid, state, "
                           "registered_ms, last_seen_ms, slurm_job_id, slurm_procid, slurm_localid, "
                           "slurm_restart_count, slurm_node FROM workers ORDER BY id");
    while (workers.Step() == SQLITE_ROW) {
      s.workers.push_back({workers.Text(0), workers.Text(1), workers.Text(2), workers.Int(3),
                           workers.Int(4), workers.Int(5), workers.Text(6), workers.Int(7),
                           workers.Int(8), workers.Text(9), workers.Int(10), workers.Int(11),
                           workers.Int(12), workers.Text(13)});
    }
    Statement ckpts(db_, "SELECT run_id, job_id, attempt_id, step, path, sha256, bytes, state, "
                         "created_ms, metrics_json FROM checkpoints ORDER BY job_id, step");
    while (ckpts.Step() == SQLITE_ROW) {
      s.checkpoints.push_back({ckpts.Text(0), ckpts.Text(1), ckpts.Text(2), ckpts.Int(3), ckpts.Text(4),
                               ckpts.Text(5), ckpts.Int(6), ckpts.Text(7), ckpts.Int(8), ckpts.Text(9)});
    }
    Statement sweeps(db_, "SELECT id, submission_id, name, spec, seq, created_ms FROM sweeps ORDER BY id");
    while (sweeps.Step() == SQLITE_ROW) {
      s.sweeps.push_back({sweeps.Text(0), sweeps.Text(1), sweeps.Text(2), sweeps.Text(3), sweeps.Int(4),
                          sweeps.Int(5)});
    }
    Statement points(db_, "SELECT sweep_id, identity, number, values_json, run_id FROM sweep_points "
                          "ORDER BY sweep_id, number");
    while (points.Step() == SQLITE_ROW) {
      s.points.push_back({points.Text(0), points.Text(1), points.Int(2), points.Text(3), points.Text(4)});
    }
    Statement decisions(db_, "SELECT sweep_id, rung, identity, value IS NOT NULL, IFNULL(value, 0), kept, ts_ms "
                             "FROM sweep_decisions ORDER BY sweep_id, rung, identity");
    while (decisions.Step() == SQLITE_ROW) {
      s.decisions.push_back({decisions.Text(0), decisions.Int(1), decisions.Text(2), decisions.Int(3) != 0,
                             decisions.Real(4), decisions.Int(5) != 0, decisions.Int(6)});
    }
    Statement allocations(db_, "SELECT id, seq, origin, slurm_job_id, nodes, workers_per_node, device, partition, "
                               "time_limit, account, script, state, reason, restarts, created_ms, updated_ms "
                               "FROM slurm_allocations ORDER BY seq");
    while (allocations.Step() == SQLITE_ROW) {
      Statement& a = allocations;
      s.allocations.push_back({a.Text(0), a.Int(1), a.Text(2), a.Text(3), a.Int(4), a.Int(5), a.Text(6), a.Text(7),
                               a.Text(8), a.Text(9), a.Text(10), a.Text(11), a.Text(12), a.Int(13), a.Int(14),
                               a.Int(15)});
    }
    return s;
  }

  absl::StatusOr<std::vector<EventRecord>> Events(const EventFilter& f) override {
    Statement q(db_, "SELECT id, ts_ms, run_id, job_id, attempt_id, kind, detail FROM events "
                     "WHERE (?1 = '' OR run_id = ?1) AND (?2 = '' OR job_id = ?2) "
                     "AND (?3 = '' OR kind = ?3) ORDER BY id");
    q.Bind(1, f.run_id).Bind(2, f.job_id).Bind(3, f.kind);
    std::vector<EventRecord> out;
    while (q.Step() == SQLITE_ROW) {
      out.push_back({q.Int(0), q.Int(1), q.Text(2), q.Text(3), q.Text(4), q.Text(5), q.Text(6)});
    }
    return out;
  }

  absl::StatusOr<std::vector<MetricRecord>> Metrics(const std::string& job_id) override {
    Statement q(db_, "SELECT run_id, job_id, key, step, value, ts_ms FROM metrics "
                     "WHERE job_id = ?1 ORDER BY key, step");
    q.Bind(1, job_id);
    std::vector<MetricRecord> out;
    while (q.Step() == SQLITE_ROW) {
      out.push_back({q.Text(0), q.Text(1), q.Text(2), q.Int(3), q.Real(4), q.Int(5)});
    }
    return out;
  }

  absl::StatusOr<std::vector<MetricRecord>> LatestMetrics() override {
    // SQLite takes the bare columns from the row that holds MAX(step).
    Statement q(db_, "SELECT run_id, job_id, key, MAX(step), value, ts_ms FROM metrics "
                     "GROUP BY job_id, key ORDER BY job_id, key");
    std::vector<MetricRecord> out;
    while (q.Step() == SQLITE_ROW) {
      out.push_back({q.Text(0), q.Text(1), q.Text(2), q.Int(3), q.Real(4), q.Int(5)});
    }
    return out;
  }

 private:
  Statement& Cached(const char* sql) {
    auto& slot = statements_[sql];
    if (!slot) slot = std::make_unique<Statement>(db_, sql);
    return *slot;
  }

  absl::Status ApplyInTx(const StoreTx& tx) {
    for (const auto& r : tx.runs) {
      Statement& s = Cached(
          "INSERT INTO runs (id, submission_id, name, spec, state, priority, seq, created_ms, "
          "finished_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO UPDATE SET "
          "state = excluded.state, finished_ms = excluded.finished_ms");
      s.Bind(1, r.id).Bind(2, r.submission_id).Bind(3, r.name).BindBlob(4, r.spec).Bind(5, r.state)
          .Bind(6, r.priority).Bind(7, r.seq).Bind(8, r.created_ms).Bind(9, r.finished_ms);
      absl::Status st = s.Run();
      if (absl::IsAlreadyExists(st)) {
        return absl::AlreadyExistsError(
            absl::StrCat("submission id '", r.submission_id, "' already belongs to another run"));
      }
      DD2_RETURN_IF_ERROR(st);
    }
    for (const auto& r : tx.jobs) {
      Statement& s = Cached(
          "INSERT INTO jobs (id, run_id, name, type, params_json, after_json, workers, device, "
          "retries, priority, state, attempts, not_before_ms, step, total, failure, updated_ms, "
          "identity, reused_from, outputs_path, outputs_sha256) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) "
          "ON CONFLICT(id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, "
          "not_before_ms = excluded.not_before_ms, step = excluded.step, total = excluded.total, "
          "failure = excluded.failure, updated_ms = excluded.updated_ms, reused_from = excluded.reused_from, "
          "outputs_path = excluded.outputs_path, outputs_sha256 = excluded.outputs_sha256");
      s.Bind(1, r.id).Bind(2, r.run_id).Bind(3, r.name).Bind(4, r.type).Bind(5, r.params_json)
          .Bind(6, r.after_json).Bind(7, r.workers).Bind(8, r.device).Bind(9, r.retries)
          .Bind(10, r.priority).Bind(11, r.state).Bind(12, r.attempts).Bind(13, r.not_before_ms)
          .Bind(14, r.step).Bind(15, r.total).Bind(16, r.failure).Bind(17, r.updated_ms)
          .Bind(18, r.identity).Bind(19, r.reused_from).Bind(20, r.outputs_path).Bind(21, r.outputs_sha256);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& r : tx.attempts) {
      Statement& s = Cached(
          "INSERT INTO attempts (id, job_id, number, state, worker_ids, started_ms, finished_ms, "
          "exit_code, signal, cause) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
          "ON CONFLICT(id) DO UPDATE SET state = excluded.state, worker_ids = excluded.worker_ids, "
          "finished_ms = excluded.finished_ms, exit_code = excluded.exit_code, "
          "signal = excluded.signal, cause = excluded.cause");
      s.Bind(1, r.id).Bind(2, r.job_id).Bind(3, r.number).Bind(4, r.state).Bind(5, r.worker_ids)
          .Bind(6, r.started_ms).Bind(7, r.finished_ms).Bind(8, r.exit_code).Bind(9, r.signal)
          .Bind(10, r.cause);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& r : tx.workers) {
      Statement& s = Cached(
          "INSERT INTO workers (id, host, device, device_index, slots, pid, state, registered_ms, "
          "last_seen_ms, slurm_job_id, slurm_procid, slurm_localid, slurm_restart_count, slurm_node) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT(id) DO UPDATE SET "
          "host = excluded.host, device = excluded.device, device_index = excluded.device_index, "
          "slots = excluded.slots, pid = excluded.pid, state = excluded.state, "
          "registered_ms = excluded.registered_ms, last_seen_ms = excluded.last_seen_ms, "
          "slurm_job_id = excluded.slurm_job_id, slurm_procid = excluded.slurm_procid, "
          "slurm_localid = excluded.slurm_localid, slurm_restart_count = excluded.slurm_restart_count, "
          "slurm_node = excluded.slurm_node");
      s.Bind(1, r.id).Bind(2, r.host).Bind(3, r.device).Bind(4, r.device_index).Bind(5, r.slots)
          .Bind(6, r.pid).Bind(7, r.state).Bind(8, r.registered_ms).Bind(9, r.last_seen_ms)
          .Bind(10, r.slurm_job_id).Bind(11, r.slurm_procid).Bind(12, r.slurm_localid)
          .Bind(13, r.slurm_restart_count).Bind(14, r.slurm_node);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& c : tx.checkpoints) {
      Statement& s = Cached(
          "INSERT INTO checkpoints (run_id, job_id, attempt_id, step, path, sha256, bytes, state, "
          "created_ms, metrics_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
          "ON CONFLICT(job_id, step) DO UPDATE SET attempt_id = excluded.attempt_id, "
          "path = excluded.path, sha256 = excluded.sha256, bytes = excluded.bytes, "
          "state = excluded.state, metrics_json = excluded.metrics_json");
      s.Bind(1, c.run_id).Bind(2, c.job_id).Bind(3, c.attempt_id).Bind(4, c.step).Bind(5, c.path)
          .Bind(6, c.sha256).Bind(7, c.bytes).Bind(8, c.state).Bind(9, c.created_ms).Bind(10, c.metrics_json);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& e : tx.events) {
      Statement& s = Cached(
          "INSERT INTO events (ts_ms, run_id, job_id, attempt_id, kind, detail) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      s.Bind(1, e.ts_ms).Bind(2, e.run_id).Bind(3, e.job_id).Bind(4, e.attempt_id).Bind(5, e.kind)
          .Bind(6, e.detail);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& m : tx.metrics) {
      Statement& s = Cached(
          "INSERT OR REPLACE INTO metrics (run_id, job_id, key, step, value, ts_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      s.Bind(1, m.run_id).Bind(2, m.job_id).Bind(3, m.key).Bind(4, m.step).Bind(5, m.value)
          .Bind(6, m.ts_ms);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& w : tx.sweeps) {
      Statement& s = Cached(
          "INSERT INTO sweeps (id, submission_id, name, spec, seq, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      s.Bind(1, w.id).Bind(2, w.submission_id).Bind(3, w.name).BindBlob(4, w.spec).Bind(5, w.seq).Bind(6, w.created_ms);
      absl::Status st = s.Run();
      if (absl::IsAlreadyExists(st)) {
        return absl::AlreadyExistsError(
            absl::StrCat("submission id '", w.submission_id, "' already belongs to another sweep"));
      }
      DD2_RETURN_IF_ERROR(st);
    }
    for (const auto& p : tx.points) {
      Statement& s = Cached(
          "INSERT INTO sweep_points (sweep_id, identity, number, values_json, run_id) VALUES (?1, ?2, ?3, ?4, ?5)");
      s.Bind(1, p.sweep_id).Bind(2, p.identity).Bind(3, p.number).Bind(4, p.values_json).Bind(5, p.run_id);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& d : tx.decisions) {
      Statement& s = Cached(
          "INSERT INTO sweep_decisions (sweep_id, rung, identity, value, kept, ts_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      s.Bind(1, d.sweep_id).Bind(2, d.rung).Bind(3, d.identity);
      if (d.has_value) {
        s.Bind(4, d.value);
      }  // else NULL: left unbound
      s.Bind(5, static_cast<int64_t>(d.kept)).Bind(6, d.ts_ms);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    for (const auto& a : tx.allocations) {
      Statement& s = Cached(
          "INSERT INTO slurm_allocations (id, seq, origin, slurm_job_id, nodes, workers_per_node, device, "
          "partition, time_limit, account, script, state, reason, restarts, created_ms, updated_ms) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) "
          "ON CONFLICT(id) DO UPDATE SET slurm_job_id = excluded.slurm_job_id, state = excluded.state, "
          "reason = excluded.reason, restarts = excluded.restarts, updated_ms = excluded.updated_ms");
      s.Bind(1, a.id).Bind(2, a.seq).Bind(3, a.origin).Bind(4, a.slurm_job_id).Bind(5, a.nodes)
          .Bind(6, a.workers_per_node).Bind(7, a.device).Bind(8, a.partition).Bind(9, a.time_limit)
          .Bind(10, a.account).Bind(11, a.script).Bind(12, a.state).Bind(13, a.reason).Bind(14, a.restarts)
          .Bind(15, a.created_ms).Bind(16, a.updated_ms);
      DD2_RETURN_IF_ERROR(s.Run());
    }
    return absl::OkStatus();
  }

  sqlite3* db_;
  std::map<const char*, std::unique_ptr<Statement>> statements_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path, int busy_timeout_ms) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", msg));
  }
  auto store = std::make_unique<SqliteJobStore>(db);
  absl::Status st = store->Init(busy_timeout_ms);
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  return std::unique_ptr<JobStore>(std::move(store));
}

}  // namespace dd2
