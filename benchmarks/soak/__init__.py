"""Soak benchmark: 1,000 neffos.js clients on two testproject instances, a broker restart.

Run ``python -m benchmarks.soak --help``; the scenario is described in ``__main__.py`` (the
driver). The other modules:

* ``clients.mjs``: the Node clients; ``node.py`` drives one such process, ``sampler.py`` samples
  RSS and CPU; ``settings.py``: the instances' Django settings;
* ``logs.py`` reads what a run leaves behind: the clients' logs and the servers' output;
* ``expected.py`` says who should have received each broadcast (the "lost message" oracle) and
  whom each ``who`` answer should have named; ``outage.py``: the outage window and the recovery;
* ``judge.py`` puts the run's results together from those rules; ``asks.py`` sums up the asks,
  joins, leaves and errors;
* ``report.py``: percentiles, RSS and CPU, the plot and the printed summary.
"""
