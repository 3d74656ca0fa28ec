-- pgTAP: increment_project_counter and current_project_counter.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(22);

SELECT is(pgcounter.current_project_counter(1), 0::bigint, 'a project never incremented reads 0');
SELECT is(pgcounter.increment_project_counter(1), 1::bigint, 'the first number is 1');
SELECT is(pgcounter.increment_project_counter(1), 2::bigint, 'then 2');
SELECT is(pgcounter.increment_project_counter(1, 1), 3::bigint, 'delta 1 is the default');
SELECT is(pgcounter.increment_project_counter(1, 10), 13::bigint, 'delta 10 takes 4..13');
SELECT is(pgcounter.current_project_counter(1), 13::bigint, 'current reads the last number handed out');
SELECT is(pgcounter.increment_project_counter(2, 5), 5::bigint, 'a first call with delta 5 returns 5');
SELECT is(pgcounter.current_project_counter(1), 13::bigint, 'projects do not share a counter');
SELECT is(pgcounter.increment_project_counter(-7), 1::bigint, 'any bigint is a project id');

-- Rejected input: a precise SQLSTATE and nothing changed.
SELECT throws_ok('SELECT pgcounter.increment_project_counter(NULL, 1)', '22004',
    'pgcounter: project_id must not be NULL', 'NULL project_id: 22004');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(1, NULL)', '22004',
    'pgcounter: delta must not be NULL', 'NULL delta: 22004');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(1, 0)', '22023',
    'pgcounter: delta must be at least 1, got 0', 'delta 0: 22023');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(1, -3)', '22023',
    'pgcounter: delta must be at least 1, got -3', 'negative delta: 22023');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(3, 0)', '22023', NULL,
    'a rejected first call ...');
SELECT is(pgcounter.current_project_counter(3), 0::bigint, '... creates no counter');
SELECT is(pgcounter.current_project_counter(1), 13::bigint, 'rejected calls changed nothing');
SELECT throws_ok('SELECT pgcounter.current_project_counter(NULL)', '22004', NULL,
    'current with a NULL project_id: 22004');

-- Overflow: refused with 22003, and the counter keeps its value.
SELECT is(pgcounter.increment_project_counter(4, 9223372036854775806), 9223372036854775806::bigint,
    'a counter may reach bigint max - 1');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(4, 2)', '22003', NULL,
    'an increment past bigint max: 22003');
SELECT is(pgcounter.current_project_counter(4), 9223372036854775806::bigint,
    'the refused increment changed nothing');
SELECT is(pgcounter.increment_project_counter(4), 9223372036854775807::bigint,
    'the last number, bigint max, can still be taken');
SELECT throws_ok('SELECT pgcounter.increment_project_counter(4)', '22003', NULL,
    'and nothing after it');

SELECT * FROM finish();
ROLLBACK;
