"""The fault suite (``make chaos``): a private stack under streamed load, one fault at a time.

Top-level rather than under ``bench/``: a benchmark measures how fast the pipeline is, this checks
what it promises when a part of it fails (nothing lost, sessions that say what the client saw) and
fails the build when it does not; it reuses bench's stream parser and devstack's stack.
"""
