-- pgTAP: ensure_project_counter_at_least and ensure_project_counters never lower a counter.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(14);

SELECT is(pgcounter.increment_project_counter(1, 50), 50::bigint, 'project 1 is at 50');
SELECT is(pgcounter.ensure_project_counter_at_least(1, 120), 120::bigint,
    'a counter behind the numbers in use is raised');
SELECT is(pgcounter.increment_project_counter(1), 121::bigint, 'and the next number follows it');
SELECT is(pgcounter.ensure_project_counter_at_least(1, 10), 121::bigint, 'it is never lowered');
SELECT is(pgcounter.ensure_project_counter_at_least(2, 7), 7::bigint,
    'a missing counter is created at the value');
SELECT is(pgcounter.ensure_project_counter_at_least(3, 0), 0::bigint, 'value 0 creates nothing');
SELECT is(pgcounter.current_project_counter(3), 0::bigint, 'and leaves the project unnumbered');

SELECT is(pgcounter.ensure_project_counters('{1,2,4,4}', '{5,9,3,8}'), 2,
    'the batch reports how many counters moved (2 raised from 7 to 9, 4 created at 8)');
SELECT results_eq(
    $$SELECT pgcounter.current_project_counter(p) FROM unnest('{1,2,4}'::bigint[]) AS p$$,
    $$VALUES (121::bigint), (9), (8)$$,
    'a project listed twice takes its largest value; none moved down'
);
SELECT is(pgcounter.ensure_project_counters('{}', '{}'), 0, 'an empty batch moves nothing');

SELECT throws_ok('SELECT pgcounter.ensure_project_counter_at_least(NULL, 1)', '22004', NULL,
    'NULL project_id: 22004');
SELECT throws_ok('SELECT pgcounter.ensure_project_counter_at_least(1, -1)', '22023',
    'pgcounter: a counter value cannot be negative', 'a negative value: 22023');
SELECT throws_ok($$SELECT pgcounter.ensure_project_counters('{1,2}', '{1}')$$, '22023', NULL,
    'lengths differ: 22023');
SELECT is(pgcounter.current_project_counter(1), 121::bigint, 'rejected repairs changed nothing');

SELECT * FROM finish();
ROLLBACK;
