"""Benchmarks (not tests): run `python -m bench.dns_bench`; see bench/README.md."""
