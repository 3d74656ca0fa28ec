-- pgcounter: the functions. CREATE OR REPLACE throughout, so a later revision that changes a
-- function re-runs this file. Every function pins search_path and schema-qualifies every
-- object it touches.

CREATE OR REPLACE FUNCTION pgcounter.increment_project_counter(
    project_id bigint,
    delta bigint DEFAULT 1
) RETURNS bigint
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    new_value bigint;
BEGIN
    IF increment_project_counter.project_id IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_id must not be NULL';
    END IF;
    IF increment_project_counter.delta IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: delta must not be NULL';
    END IF;
    IF increment_project_counter.delta < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: delta must be at least 1, got ' || increment_project_counter.delta,
            HINT = 'A counter only moves forward; delta is how many numbers the caller takes.';
    END IF;

    -- One statement, atomic: the first call for a project inserts delta; every later one adds
    -- delta under the row lock. Concurrent first calls are serialised by the primary key's
    -- speculative insertion, so none of them fails and none is lost. The WHERE refuses an
    -- increment that would overflow; then no row comes back and nothing has changed.
    INSERT INTO pgcounter.project_counter AS c (project_id, value)
    VALUES (increment_project_counter.project_id, increment_project_counter.delta)
    ON CONFLICT (project_id) DO UPDATE
        SET value = c.value + excluded.value
        WHERE c.value <= 9223372036854775807 - excluded.value
    RETURNING c.value INTO new_value;

    IF new_value IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'numeric_value_out_of_range',
            MESSAGE = 'pgcounter: counter of project ' || increment_project_counter.project_id
                || ' would overflow bigint (delta ' || increment_project_counter.delta || ')';
    END IF;
    RETURN new_value;
END
$fn$;

COMMENT ON FUNCTION pgcounter.increment_project_counter(bigint, bigint) IS
    'pgcounter: add delta (>= 1) to the project''s counter and return the new value; '
    'the caller owns new_value - delta + 1 .. new_value';


CREATE OR REPLACE FUNCTION pgcounter.current_project_counter(
    project_id bigint
) RETURNS bigint
LANGUAGE plpgsql
STABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    current_value bigint;
BEGIN
    IF current_project_counter.project_id IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_id must not be NULL';
    END IF;
    SELECT c.value INTO current_value
      FROM pgcounter.project_counter AS c
     WHERE c.project_id = current_project_counter.project_id;
    RETURN coalesce(current_value, 0);
END
$fn$;

COMMENT ON FUNCTION pgcounter.current_project_counter(bigint) IS
    'pgcounter: the last number handed out for the project, 0 if it never was incremented';
