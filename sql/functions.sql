-- pgcounter: the functions. CREATE OR REPLACE throughout, so a later revision that changes a
-- function re-runs this file. Every function pins search_path and schema-qualifies every
-- object it touches.
--
-- Least privilege: the counter functions are SECURITY DEFINER, so an application role needs
-- only EXECUTE on them (granted by pgcounter.grant_usage) and never any right on the table:
-- it can take and read numbers, but cannot move a counter by hand, backwards or at all.
-- The pinned search_path is what makes SECURITY DEFINER safe against search_path hijacking.

CREATE OR REPLACE FUNCTION pgcounter.increment_project_counter(
    project_id bigint,
    delta bigint DEFAULT 1
) RETURNS bigint
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SECURITY DEFINER
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
SECURITY DEFINER
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


CREATE OR REPLACE FUNCTION pgcounter.increment_project_counters(
    project_ids bigint[],
    deltas bigint[]
) RETURNS TABLE (project_id bigint, value bigint)
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    expected integer;
    changed integer;
BEGIN
    IF project_ids IS NULL OR deltas IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_ids and deltas must not be NULL';
    END IF;
    IF coalesce(array_ndims(project_ids), 1) <> 1 OR coalesce(array_ndims(deltas), 1) <> 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: project_ids and deltas must be one-dimensional arrays';
    END IF;
    expected := cardinality(project_ids);
    IF expected <> cardinality(deltas) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: project_ids and deltas differ in length ('
                || expected || ' and ' || cardinality(deltas) || ')';
    END IF;
    IF array_position(project_ids, NULL) IS NOT NULL OR array_position(deltas, NULL) IS NOT NULL
    THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_ids and deltas must not contain NULL';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(deltas) AS d(delta) WHERE d.delta < 1) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: every delta must be at least 1';
    END IF;
    IF (SELECT count(DISTINCT p.id) FROM unnest(project_ids) AS p(id)) <> expected THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: project_ids must not repeat a project',
            HINT = 'Add the deltas of one project together.';
    END IF;

    -- One statement for the whole batch. Rows are inserted, and so locked, in project_id
    -- order: two batches always take their row locks in the same order and cannot deadlock.
    RETURN QUERY
    INSERT INTO pgcounter.project_counter AS c (project_id, value)
    SELECT i.project_id, i.delta
      FROM unnest(project_ids, deltas) AS i(project_id, delta)
     ORDER BY i.project_id
    ON CONFLICT (project_id) DO UPDATE
        SET value = c.value + excluded.value
        WHERE c.value <= 9223372036854775807 - excluded.value
    RETURNING c.project_id, c.value;

    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> expected THEN
        -- A row the WHERE refused: raising aborts the statement, so nothing has changed.
        RAISE EXCEPTION USING
            ERRCODE = 'numeric_value_out_of_range',
            MESSAGE = 'pgcounter: a counter in the batch would overflow bigint';
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgcounter.increment_project_counters(bigint[], bigint[]) IS
    'pgcounter: increment_project_counter for many projects in one statement, locking rows '
    'in project_id order; returns (project_id, value) per project';



CREATE OR REPLACE FUNCTION pgcounter.ensure_project_counters(
    project_ids bigint[],
    at_least bigint[]
) RETURNS integer
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    moved integer;
BEGIN
    IF project_ids IS NULL OR at_least IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_ids and at_least must not be NULL';
    END IF;
    IF coalesce(array_ndims(project_ids), 1) <> 1 OR coalesce(array_ndims(at_least), 1) <> 1
       OR cardinality(project_ids) <> cardinality(at_least) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: project_ids and at_least must be one-dimensional arrays '
                || 'of the same length';
    END IF;
    IF array_position(project_ids, NULL) IS NOT NULL OR array_position(at_least, NULL) IS NOT NULL
    THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_ids and at_least must not contain NULL';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(at_least) AS v(value) WHERE v.value < 0) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'pgcounter: a counter value cannot be negative';
    END IF;

    -- Never moves a counter down (GREATEST semantics through the WHERE): a repair can only
    -- skip numbers, never hand one out again. A project listed twice counts with its largest
    -- value. Rows are locked in project_id order, like every batch.
    WITH moved_rows AS (
        INSERT INTO pgcounter.project_counter AS c (project_id, value)
        SELECT i.project_id, max(i.value)
          FROM unnest(project_ids, at_least) AS i(project_id, value)
         WHERE i.value > 0
         GROUP BY i.project_id
         ORDER BY i.project_id
        ON CONFLICT (project_id) DO UPDATE
            SET value = excluded.value
            WHERE c.value < excluded.value
        RETURNING 1
    )
    SELECT count(*)::integer INTO moved FROM moved_rows;
    RETURN moved;
END
$fn$;

COMMENT ON FUNCTION pgcounter.ensure_project_counters(bigint[], bigint[]) IS
    'pgcounter: raise each project''s counter to at least the given value (never lower it); '
    'returns how many counters moved. For repairs and imports; not granted by grant_usage';


CREATE OR REPLACE FUNCTION pgcounter.ensure_project_counter_at_least(
    project_id bigint,
    value bigint
) RETURNS bigint
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF ensure_project_counter_at_least.project_id IS NULL
       OR ensure_project_counter_at_least.value IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: project_id and value must not be NULL';
    END IF;
    PERFORM pgcounter.ensure_project_counters(
        ARRAY[ensure_project_counter_at_least.project_id],
        ARRAY[ensure_project_counter_at_least.value]
    );
    RETURN pgcounter.current_project_counter(ensure_project_counter_at_least.project_id);
END
$fn$;

COMMENT ON FUNCTION pgcounter.ensure_project_counter_at_least(bigint, bigint) IS
    'pgcounter: raise one counter to at least value (never lower it); returns the counter';


-- Functions are executable by PUBLIC by default; a SECURITY DEFINER one must not be.
REVOKE ALL ON FUNCTION pgcounter.increment_project_counter(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgcounter.current_project_counter(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgcounter.increment_project_counters(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgcounter.ensure_project_counters(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgcounter.ensure_project_counter_at_least(bigint, bigint) FROM PUBLIC;


CREATE OR REPLACE FUNCTION pgcounter.grant_usage(grantee regrole)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    role_name name;
BEGIN
    IF grantee IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'pgcounter: grantee must not be NULL';
    END IF;
    -- The role's plain name, quoted once by quote_ident: never raw text in DDL. (grantee::text
    -- is already quoted where the name needs it, and quoting that again names another role.)
    SELECT r.rolname INTO STRICT role_name FROM pg_catalog.pg_roles AS r WHERE r.oid = grantee;
    -- Exactly what an application needs: the schema, and EXECUTE on the counter functions.
    -- No right on the table itself.
    EXECUTE 'GRANT USAGE ON SCHEMA pgcounter TO ' || quote_ident(role_name);
    EXECUTE 'GRANT EXECUTE ON FUNCTION pgcounter.increment_project_counter(bigint, bigint), '
        || 'pgcounter.current_project_counter(bigint), '
        || 'pgcounter.increment_project_counters(bigint[], bigint[]) TO '
        || quote_ident(role_name);
END
$fn$;

COMMENT ON FUNCTION pgcounter.grant_usage(regrole) IS
    'pgcounter: let a role take and read numbers (USAGE on the schema, EXECUTE on the '
    'counter functions) and nothing else; run by the owner of the pgcounter objects';

REVOKE ALL ON FUNCTION pgcounter.grant_usage(regrole) FROM PUBLIC;
