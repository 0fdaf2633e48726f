"""autolr benchmark suite: workloads, baselines, a runner and the report.

Run ``python -m benchmarks.run --quick`` for a small-budget pass over every
workload, or ``python -m benchmarks.run`` for the full budgets; results go to
``benchmarks/results/`` and the tables and plots to ``BENCHMARKS.md``.
"""
