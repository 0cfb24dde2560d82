"""Benchmarks: run on demand, print ratios against a direct call measured in the same run."""
