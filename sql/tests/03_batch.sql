-- pgTAP: increment_project_counters, many projects in one statement.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(12);

SELECT is(pgcounter.increment_project_counter(20, 4), 4::bigint, 'project 20 starts at 4');
SELECT results_eq(
    $$SELECT project_id, value FROM pgcounter.increment_project_counters('{30,20,10}', '{1,2,3}')
       ORDER BY project_id$$,
    $$VALUES (10::bigint, 3::bigint), (20, 6), (30, 1)$$,
    'each project gets its new value: first calls and existing counters alike'
);
SELECT is_empty(
    $$SELECT * FROM pgcounter.increment_project_counters('{}', '{}')$$,
    'an empty batch returns nothing'
);

SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters(NULL, '{1}')$$, '22004', NULL,
    'NULL arrays: 22004');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{1,NULL}', '{1,1}')$$, '22004',
    NULL, 'a NULL project id: 22004');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{1,2}', '{1}')$$, '22023',
    'pgcounter: project_ids and deltas differ in length (2 and 1)', 'lengths differ: 22023');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{1,2}', '{1,0}')$$, '22023',
    'pgcounter: every delta must be at least 1', 'a delta below 1: 22023');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{1,1}', '{1,1}')$$, '22023',
    'pgcounter: project_ids must not repeat a project', 'a repeated project: 22023');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{{1}}', '{{1}}')$$, '22023',
    NULL, 'two-dimensional arrays: 22023');

SELECT is(pgcounter.increment_project_counter(40, 9223372036854775807), 9223372036854775807::bigint,
    'project 40 is at bigint max');
SELECT throws_ok($$SELECT * FROM pgcounter.increment_project_counters('{10,40}', '{1,1}')$$, '22003',
    'pgcounter: a counter in the batch would overflow bigint', 'one overflow fails the batch: 22003');
SELECT results_eq(
    $$SELECT pgcounter.current_project_counter(p) FROM unnest('{10,20,30}'::bigint[]) AS p$$,
    $$VALUES (3::bigint), (6), (1)$$,
    'rejected batches changed nothing, not even the projects before the bad one'
);

SELECT * FROM finish();
ROLLBACK;
