-- pgcounter bench: the tables of the alternatives pgcounter is measured against. Not part of
-- the bundle and never installed by the migrations: `pgcounter bench` creates this schema
-- for a run and drops it afterwards.

CREATE SCHEMA pgcounter_bench;

-- The original component's table: the application upserts it itself.
CREATE TABLE pgcounter_bench.original_counter (
    project_id bigint PRIMARY KEY,
    value      bigint NOT NULL
);

-- Read-modify-write under SELECT … FOR UPDATE.
CREATE TABLE pgcounter_bench.rmw_counter (
    project_id bigint PRIMARY KEY,
    value      bigint NOT NULL
);
