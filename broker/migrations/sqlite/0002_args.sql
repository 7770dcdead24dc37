-- A task's arguments as JSON text, secret fields already redacted
-- (`Envelope::args_json`): written when the producer records the task.
ALTER TABLE spool_jobs ADD COLUMN args TEXT;
