-- pgcounter: removes everything schema.sql and functions.sql create. Executed by the
-- downgrade of alembic revision 0001. No CASCADE: if someone put objects of their own into
-- the pgcounter schema, the downgrade stops instead of dropping them.

DROP FUNCTION pgcounter.current_project_counter(bigint);
DROP FUNCTION pgcounter.increment_project_counter(bigint, bigint);
DROP TABLE pgcounter.project_counter;
DROP SCHEMA pgcounter;
