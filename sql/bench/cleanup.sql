-- pgcounter bench: removes what a run left behind. The bench takes project ids from
-- 9000000000000000000 up, far above real ones, and its alternatives' schema.
DELETE FROM pgcounter.project_counter WHERE project_id >= 9000000000000000000;
DROP SCHEMA IF EXISTS pgcounter_bench CASCADE;
