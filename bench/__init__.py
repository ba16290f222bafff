"""Benchmarks of hive + keeper against the limit and against a peer, in one run.

``python -m bench`` (``make bench``); see ``python -m bench --help``.
"""
