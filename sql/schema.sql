-- pgcounter: schema and table. Executed once by alembic revision 0001.

CREATE SCHEMA pgcounter;

COMMENT ON SCHEMA pgcounter IS 'pgcounter: per-project counters';

CREATE TABLE pgcounter.project_counter (
    project_id bigint PRIMARY KEY,
    value      bigint NOT NULL,
    CONSTRAINT project_counter_value_positive CHECK (value > 0)
);

COMMENT ON TABLE pgcounter.project_counter IS
    'pgcounter: the last number handed out per project; change it only through the pgcounter functions';
