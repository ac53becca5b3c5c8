-- dd2 coordinator state, version 1. Applied in one transaction; PRAGMA user_version records it.
CREATE TABLE runs (
  id            TEXT PRIMARY KEY,
  submission_id TEXT NOT NULL UNIQUE,
  name          TEXT NOT NULL,
  spec          BLOB NOT NULL,          -- serialized dd2.proto.RunSpec
  state         TEXT NOT NULL,
  priority      INTEGER NOT NULL,
  seq           INTEGER NOT NULL UNIQUE, -- submission order, for FIFO
  created_ms    INTEGER NOT NULL,
  finished_ms   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
  id            TEXT PRIMARY KEY,       -- "<run id>/<job name>"
  run_id        TEXT NOT NULL REFERENCES runs(id),
  name          TEXT NOT NULL,
  type          TEXT NOT NULL,
  params_json   TEXT NOT NULL,
  after_json    TEXT NOT NULL,          -- JSON array of job names in the same run
  workers       INTEGER NOT NULL,
  device        TEXT NOT NULL,
  retries       INTEGER NOT NULL,
  priority      INTEGER NOT NULL,
  state         TEXT NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,
  not_before_ms INTEGER NOT NULL DEFAULT 0, -- retry backoff
  step          INTEGER NOT NULL DEFAULT 0,
  total         INTEGER NOT NULL DEFAULT 0,
  failure       TEXT NOT NULL DEFAULT '',
  updated_ms    INTEGER NOT NULL
);
CREATE INDEX jobs_by_run ON jobs(run_id);

CREATE TABLE attempts (
  id            TEXT PRIMARY KEY,       -- "<job id>#<number>"
  job_id        TEXT NOT NULL REFERENCES jobs(id),
  number        INTEGER NOT NULL,
  state         TEXT NOT NULL,
  worker_ids    TEXT NOT NULL,          -- comma-separated
  started_ms    INTEGER NOT NULL,
  finished_ms   INTEGER NOT NULL DEFAULT 0,
  exit_code     INTEGER NOT NULL DEFAULT 0,
  signal        INTEGER NOT NULL DEFAULT 0,
  cause         TEXT NOT NULL DEFAULT '',
  UNIQUE(job_id, number)
);

CREATE TABLE workers (
  id            TEXT PRIMARY KEY,
  host          TEXT NOT NULL,
  device        TEXT NOT NULL,
  device_index  INTEGER NOT NULL,
  slots         INTEGER NOT NULL,
  pid           INTEGER NOT NULL,
  state         TEXT NOT NULL,
  registered_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL
);

CREATE TABLE checkpoints (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id        TEXT NOT NULL,
  job_id        TEXT NOT NULL,
  attempt_id    TEXT NOT NULL,
  step          INTEGER NOT NULL,
  path          TEXT NOT NULL,
  sha256        TEXT NOT NULL,
  bytes         INTEGER NOT NULL,
  state         TEXT NOT NULL,          -- committed | deleting | deleted
  created_ms    INTEGER NOT NULL
);
CREATE INDEX checkpoints_by_job ON checkpoints(job_id, step);

CREATE TABLE metrics (
  run_id        TEXT NOT NULL,
  job_id        TEXT NOT NULL,
  key           TEXT NOT NULL,
  step          INTEGER NOT NULL,
  value         REAL NOT NULL,
  ts_ms         INTEGER NOT NULL,
  PRIMARY KEY (job_id, key, step)
);
CREATE INDEX metrics_by_run ON metrics(run_id, key, step);

CREATE TABLE events (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms         INTEGER NOT NULL,
  run_id        TEXT NOT NULL DEFAULT '',
  job_id        TEXT NOT NULL DEFAULT '',
  attempt_id    TEXT NOT NULL DEFAULT '',
  kind          TEXT NOT NULL,
  detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_kind ON events(kind);
