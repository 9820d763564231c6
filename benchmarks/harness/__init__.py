"""What every benchmark shares, one copy each.

- :mod:`.ports`: :func:`~.ports.free_port` (a loopback port free for TCP *and* UDP).
- :mod:`.stats`: :func:`~.stats.percentile`, the one definition behind every p50/p90/p99 and
  median in every report, and :func:`~.stats.latency_summary`.
- :mod:`.procs`: commands for a ptproxy end, the test origin, nginx and Caddy; process groups,
  the one :func:`~.procs.stop` helper, readiness waits, /proc sampling.
- :mod:`.config`: the one ptproxy TOML writer (both ends) and the nginx config templates
  (origin, and the nginx mTLS pair).
- :mod:`.http`: the one HTTP/1.1 load client (asyncio, keep-alive, timings, optional digests).
"""
