-- pgcounter: removes everything schema.sql and functions.sql create. Executed by the
-- downgrade of alembic revision 0001. No CASCADE: if someone put objects of their own into
-- the pgcounter schema, the downgrade stops instead of dropping them.

-- functions.sql is re-run by later revisions and holds every function, so a function added
-- by a later revision may exist here too.
DROP FUNCTION IF EXISTS pgcounter.ensure_project_counter_at_least(bigint, bigint);
DROP FUNCTION IF EXISTS pgcounter.ensure_project_counters(bigint[], bigint[]);
DROP FUNCTION IF EXISTS pgcounter.grant_usage(regrole);
DROP FUNCTION IF EXISTS pgcounter.increment_project_counters(bigint[], bigint[]);
DROP FUNCTION pgcounter.current_project_counter(bigint);
DROP FUNCTION pgcounter.increment_project_counter(bigint, bigint);
DROP TABLE pgcounter.project_counter;
-- Grants made by pgcounter.grant_usage on the schema go with it.
DROP SCHEMA pgcounter;
