"""The duixwatch benchmark (``make bench``, ``python -m bench``).

For each fleet size it starts ``duixwatch sim`` in its own process on 127.0.0.1 with added
latency, then measures, one after the other and against the same simulator:

* ``duixwatch run`` (:mod:`bench.daemon`), configured so that N apps x 2 requests fit in one
  poll interval;
* the baseline (:mod:`bench.baseline`): what a user writes without duixwatch, one process with a
  sequential loop of synchronous ``requests.get`` calls and a ``prometheus_client`` exporter;

and prints one table of the figures, their ratios and the targets (:mod:`bench.report`).
Every process it starts is stopped on the way out, on errors and on Ctrl-C too
(:mod:`bench.procs`). Only 127.0.0.1 is ever used.

The baseline module runs as its own process (``python -m bench.baseline``) and imports nothing
from duixwatch, so its CPU and memory are those of the user's script alone.
"""
