"""Benchmarks for nano_magic: repeatable scripts that print figures next to a baseline measured
in the same run. They assert nothing. `python -m benchmarks` runs them all (see docs/performance.md);
`python -m benchmarks.<module>` runs one.
"""
