-- SLURM: where a worker runs (its allocation, task rank and restart count, reported in Hello),
-- and every allocation dd2 submitted with sbatch (dd2ctl slurm launch, or the autoscaler).
ALTER TABLE workers ADD COLUMN slurm_job_id TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN slurm_procid INTEGER NOT NULL DEFAULT -1;
ALTER TABLE workers ADD COLUMN slurm_localid INTEGER NOT NULL DEFAULT -1;
ALTER TABLE workers ADD COLUMN slurm_restart_count INTEGER NOT NULL DEFAULT -1;
ALTER TABLE workers ADD COLUMN slurm_node TEXT NOT NULL DEFAULT '';

CREATE TABLE slurm_allocations (
  id             TEXT PRIMARY KEY,         -- "alloc-<seq>"
  seq            INTEGER NOT NULL UNIQUE,
  origin         TEXT NOT NULL,            -- "launch" (dd2ctl slurm launch) or "autoscale"
  slurm_job_id   TEXT NOT NULL DEFAULT '', -- '' while the autoscaler's sbatch has not answered
  nodes          INTEGER NOT NULL,
  workers_per_node INTEGER NOT NULL,       -- GPUs per node: one worker each
  device         TEXT NOT NULL,            -- "cuda" or "cpu"
  partition      TEXT NOT NULL DEFAULT '',
  time_limit     TEXT NOT NULL DEFAULT '',
  account        TEXT NOT NULL DEFAULT '',
  script         TEXT NOT NULL,            -- the rendered sbatch script
  state          TEXT NOT NULL,            -- submitting, then SLURM's job state (PENDING, RUNNING, ...), or ended
  reason         TEXT NOT NULL DEFAULT '', -- SLURM's reason, or why sbatch failed
  restarts       INTEGER NOT NULL DEFAULT 0,
  created_ms     INTEGER NOT NULL,
  updated_ms     INTEGER NOT NULL
);
