"""Benchmarks of qd's search against the searches users would run instead (``scripts/bench_search.py``).

:mod:`qd.bench.stats` holds the paired statistics and the hypervolume, :mod:`qd.bench.arms` the
arms (qd's operator sets, random search, Optuna's samplers, pyribs's emitters) and the
measurement every arm gets. Optuna and pyribs come with ``pip install 'qd[bench]'`` and are
imported only by the arms that use them.
"""
