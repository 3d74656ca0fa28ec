"""`pgcounter bench`: pgcounter's modes against the alternatives, on one database, in one run.

workload.py picks projects; contenders.py holds what is measured (pgcounter's modes, the
original fix's path, SELECT … FOR UPDATE, pgbench); runner.py runs one contender under one
workload and measures it; report.py turns results into tables, JSON and a chart.
"""
