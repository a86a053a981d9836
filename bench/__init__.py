"""``python -m bench``: a load generator for the chat pipeline, with a direct-simulator baseline.

See ``python -m bench --help`` and README, Benchmarks. Modules: ``tokens`` (JWTs for the bench
users), ``cluster`` (the processes it starts), ``proxy`` (a private HAProxy), ``parsers`` and
``loadgen`` (the client: closed loops, open loop, hold), ``phases`` (what one run measures),
``cpu``, ``memory``, ``management`` (CPU, resident memory, reply-path broker messages), ``profile``
(py-spy), ``report`` (figures, targets, output).
"""
