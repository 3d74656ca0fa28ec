-- pgTAP: the objects the bundle installs, and how they are declared.
-- Run against a migrated database: pg_prove -d "$DSN" sql/tests/*.sql
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(35);

SELECT has_schema('pgcounter');
SELECT has_table('pgcounter', 'project_counter', 'the counter table exists');
SELECT columns_are('pgcounter', 'project_counter', ARRAY['project_id', 'value']);
SELECT col_type_is('pgcounter', 'project_counter', 'project_id', 'bigint', 'project_id is bigint');
SELECT col_type_is('pgcounter', 'project_counter', 'value', 'bigint', 'value is bigint');
SELECT col_is_pk('pgcounter', 'project_counter', 'project_id', 'project_id is the primary key');
SELECT col_not_null('pgcounter', 'project_counter', 'value', 'value is NOT NULL');
SELECT col_has_check('pgcounter', 'project_counter', 'value', 'value has a CHECK (value > 0)');

-- The functions, with the signatures and return types the client calls.
SELECT functions_are('pgcounter', ARRAY[
    'increment_project_counter', 'current_project_counter', 'increment_project_counters',
    'ensure_project_counters', 'ensure_project_counter_at_least', 'grant_usage'
]);
SELECT function_returns('pgcounter', 'increment_project_counter', ARRAY['bigint', 'bigint'], 'bigint');
SELECT function_returns('pgcounter', 'current_project_counter', ARRAY['bigint'], 'bigint');
SELECT function_returns('pgcounter', 'increment_project_counters', ARRAY['bigint[]', 'bigint[]'], 'setof record');
SELECT function_returns('pgcounter', 'ensure_project_counters', ARRAY['bigint[]', 'bigint[]'], 'integer');
SELECT function_returns('pgcounter', 'ensure_project_counter_at_least', ARRAY['bigint', 'bigint'], 'bigint');
SELECT function_returns('pgcounter', 'grant_usage', ARRAY['regrole'], 'void');

SELECT volatility_is('pgcounter', 'increment_project_counter', ARRAY['bigint', 'bigint'], 'volatile');
SELECT volatility_is('pgcounter', 'current_project_counter', ARRAY['bigint'], 'stable');

-- SECURITY DEFINER for what the application calls, so it needs EXECUTE and nothing else;
-- grant_usage runs with its caller's rights, so only someone who may grant can.
SELECT is_definer('pgcounter', 'increment_project_counter', ARRAY['bigint', 'bigint']);
SELECT is_definer('pgcounter', 'current_project_counter', ARRAY['bigint']);
SELECT is_definer('pgcounter', 'increment_project_counters', ARRAY['bigint[]', 'bigint[]']);
SELECT is_definer('pgcounter', 'ensure_project_counters', ARRAY['bigint[]', 'bigint[]']);
SELECT is_definer('pgcounter', 'ensure_project_counter_at_least', ARRAY['bigint', 'bigint']);
SELECT isnt_definer('pgcounter', 'grant_usage', ARRAY['regrole']);

-- Every function pins search_path: the hardening that makes SECURITY DEFINER safe.
SELECT is(
    p.proconfig,
    ARRAY['search_path=pg_catalog, pg_temp'],
    p.oid::regprocedure || ' pins search_path'
)
  FROM pg_catalog.pg_proc AS p
 WHERE p.pronamespace = 'pgcounter'::regnamespace
 ORDER BY p.oid::regprocedure::text;

-- PUBLIC may run none of them: a role gets EXECUTE only through grant_usage.
SELECT ok(
    NOT has_function_privilege('public', p.oid, 'EXECUTE'),
    'PUBLIC cannot execute ' || p.oid::regprocedure
)
  FROM pg_catalog.pg_proc AS p
 WHERE p.pronamespace = 'pgcounter'::regnamespace
 ORDER BY p.oid::regprocedure::text;

SELECT * FROM finish();
ROLLBACK;
