"""benscale's benchmark suite: each figure is a ratio against a baseline measured in the same run.

Run ``python -m bench all`` (or ``make bench``); see bench/__main__.py and docs/benchmarks.md.
"""
