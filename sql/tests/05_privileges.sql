-- pgTAP: least privilege. A role granted with grant_usage can take and read numbers, and
-- nothing else; the functions cannot be redirected through the caller's search_path.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);

CREATE ROLE "pgcounter tap app" NOLOGIN;
SELECT lives_ok($$SELECT pgcounter.grant_usage('"pgcounter tap app"')$$,
    'grant_usage takes a role whose name needs quoting');

SELECT schema_privs_are('pgcounter', 'pgcounter tap app', ARRAY['USAGE']);
SELECT table_privs_are('pgcounter', 'project_counter', 'pgcounter tap app', ARRAY[]::name[],
    'no right at all on the table');
SELECT function_privs_are('pgcounter', 'increment_project_counter', ARRAY['bigint', 'bigint'],
    'pgcounter tap app', ARRAY['EXECUTE']);
SELECT function_privs_are('pgcounter', 'current_project_counter', ARRAY['bigint'],
    'pgcounter tap app', ARRAY['EXECUTE']);
SELECT function_privs_are('pgcounter', 'increment_project_counters', ARRAY['bigint[]', 'bigint[]'],
    'pgcounter tap app', ARRAY['EXECUTE']);
SELECT function_privs_are('pgcounter', 'ensure_project_counter_at_least', ARRAY['bigint', 'bigint'],
    'pgcounter tap app', ARRAY[]::name[], 'repairs are not granted');
SELECT function_privs_are('pgcounter', 'ensure_project_counters', ARRAY['bigint[]', 'bigint[]'],
    'pgcounter tap app', ARRAY[]::name[], 'batch repairs are not granted');

SET LOCAL ROLE "pgcounter tap app";
SELECT is(pgcounter.increment_project_counter(1), 1::bigint, 'the role takes a number');
SELECT is(pgcounter.current_project_counter(1), 1::bigint, 'and reads it');
SELECT throws_ok('UPDATE pgcounter.project_counter SET value = 0', '42501', NULL,
    'it cannot UPDATE the table');
SELECT throws_ok('DELETE FROM pgcounter.project_counter', '42501', NULL,
    'it cannot DELETE from the table');
SELECT throws_ok('INSERT INTO pgcounter.project_counter VALUES (2, 1)', '42501', NULL,
    'it cannot INSERT into the table');
SELECT throws_ok('SELECT pgcounter.ensure_project_counter_at_least(1, 1000)', '42501', NULL,
    'it cannot run a repair');
SELECT throws_ok($$SELECT pgcounter.grant_usage('"pgcounter tap app"')$$, '42501', NULL,
    'it cannot grant');
RESET ROLE;

-- A hostile + for bigint placed ahead of pg_catalog in the caller's search_path: the
-- functions' pinned search_path ignores it.
CREATE SCHEMA pgcounter_tap_hostile;
CREATE FUNCTION pgcounter_tap_hostile.hostile_plus(bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS 'SELECT 0::bigint';
CREATE OPERATOR pgcounter_tap_hostile.+ (
    LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pgcounter_tap_hostile.hostile_plus
);
SET LOCAL search_path = pgcounter_tap_hostile, pg_catalog, public;
SELECT is(1::bigint + 1::bigint, 0::bigint, 'the hostile operator is live for the caller');
SELECT is(pgcounter.increment_project_counter(1, 5), 6::bigint,
    'but increment_project_counter still adds');

SELECT * FROM finish();
ROLLBACK;
