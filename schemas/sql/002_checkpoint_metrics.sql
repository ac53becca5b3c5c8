-- Checkpoints are identified by (job, step); each carries the metrics reported with it (and by
-- evals of it), which retention's keep_best reads.
ALTER TABLE checkpoints ADD COLUMN metrics_json TEXT NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX checkpoints_job_step ON checkpoints(job_id, step);
