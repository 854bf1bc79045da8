"""The duixwatch soak (``make soak``, ``python -m bench.soak``; issue 15).

The daemon runs against the simulator for ``SOAK_SECONDS`` (default 1800; CI runs 120) with a
churning workload and enforcing policies, while a seeded chaos schedule (:mod:`.chaos`) injects
every simulator fault kind in random order and overlaps, sends SIGHUP reloads (every other one
with a bad file), and once SIGKILLs and restarts the daemon; scrapers hit ``/metrics`` and
``/status`` concurrently the whole time (:mod:`.observe`). At the end :mod:`.checks` judges,
and the figures are printed (:mod:`.report`); any violation exits 1:

* RSS flat after the warm-up (< 1 MB per 10 minutes, judged on a fit of at least 600 s);
* the files of ``state.dir`` within their bounds (when the daemon has them);
* every stop and close-all the simulator received has its intent line, written before;
* no stop planned on a poll that cannot have succeeded (every read of it met a failing fault);
* every exposition sampled passes ``promtool check metrics`` (the last one too);
* no app key and no token in any output (logs, audit log, ``/metrics``, ``/status``);
* every app back to ``duix_up 1`` within one interval + the backoff after its faults end;
* bad reloads keep the old config (gauge 0, the process alive, the old threshold still acting),
  good ones apply (gauge 1, a new success time, the new threshold acting).

It reuses the benchmark's process handling (:mod:`bench.procs`) and simulator control
(:mod:`bench.sim`); only 127.0.0.1 is used.
"""
