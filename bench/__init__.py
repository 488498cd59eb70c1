"""skynet's benchmark suite: ``python -m bench --quick`` (smoke) or ``python -m bench --full`` (figures).

See bench/README.md and bench/RESULTS.md.
"""
