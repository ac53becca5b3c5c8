-- Job memoization: a job's identity (hash of type, version, resolved params and the identities of
-- the jobs it reads); a reused job names the job whose artifacts it reads (or, while it waits,
-- the identical job it waits for); a succeeded job's outputs manifest and its checksum.
ALTER TABLE jobs ADD COLUMN identity TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN reused_from TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN outputs_path TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN outputs_sha256 TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_by_identity ON jobs(identity);

-- Sweeps: each point is a run; a point's identity is the hash of its resolved run spec.
CREATE TABLE sweeps (
  id            TEXT PRIMARY KEY,       -- "<name>-s<seq>"
  submission_id TEXT NOT NULL UNIQUE,
  name          TEXT NOT NULL,
  spec          BLOB NOT NULL,          -- serialized dd2.proto.SweepSpec without its points
  seq           INTEGER NOT NULL UNIQUE,
  created_ms    INTEGER NOT NULL
);

CREATE TABLE sweep_points (
  sweep_id      TEXT NOT NULL REFERENCES sweeps(id),
  identity      TEXT NOT NULL,
  number        INTEGER NOT NULL,       -- 1, 2, ... in the order points were added
  values_json   TEXT NOT NULL,
  run_id        TEXT NOT NULL REFERENCES runs(id),
  PRIMARY KEY (sweep_id, identity)
);

-- Successive halving: one row per (rung, point) once the rung is decided; written before the
-- stopped points' jobs are stopped.
CREATE TABLE sweep_decisions (
  sweep_id      TEXT NOT NULL REFERENCES sweeps(id),
  rung          INTEGER NOT NULL,
  identity      TEXT NOT NULL,
  value         REAL,                   -- NULL: the point had no value (failed): stopped
  kept          INTEGER NOT NULL,
  ts_ms         INTEGER NOT NULL,
  PRIMARY KEY (sweep_id, rung, identity)
);
