"""Benchmarks. `make bench` runs every `bench/bench_*.py`; each records its figures with
`bench.harness.record`, which updates docs/benchmarks.json and regenerates docs/benchmarks.md."""
