"""``python -m bench``: a load generator for the chat pipeline, with a direct-simulator baseline.

See ``python -m bench --help``. Modules: ``tokens`` (JWTs for the bench users), ``cluster`` (the
processes it starts), ``loadgen`` (the client), ``cpu`` (who used the CPU), ``report`` (figures).
"""
