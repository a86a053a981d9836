"""Open-file limits for the processes ``make run`` and ``make bench`` start.

Every open stream costs a socket in the load generator (or client), two in HAProxy (client and
gateway side), one in a gateway, and one in a worker and one in the simulator while it generates.
Children inherit the limit, so raising it once in the parent is enough.
"""

from __future__ import annotations

import resource

__all__ = ["WANTED_OPEN_FILES", "haproxy_maxconn", "haproxy_processes", "raise_open_files_limit"]

WANTED_OPEN_FILES = 65536
# File descriptors HAProxy keeps besides its connections: listeners, stats, log, health checks.
HAPROXY_SPARE_FDS = 100


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` (the hard limit too, where allowed).

    Without CAP_SYS_RESOURCE the hard limit cannot grow, so the soft limit stops there. Returns
    the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):  # not privileged: the hard limit is the ceiling
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def haproxy_maxconn(open_files: int, wanted: int) -> int:
    """The largest global ``maxconn`` up to ``wanted`` that one HAProxy process can hold with
    ``open_files`` descriptors (two per proxied connection); HAProxy refuses to start otherwise."""
    return max(1, min(wanted, (open_files - HAPROXY_SPARE_FDS) // 2))


def haproxy_processes(streams: int, maxconn: int) -> int:
    """HAProxy processes needed to hold ``streams`` connections at ``maxconn`` each. Several
    processes share one port (HAProxy binds with SO_REUSEPORT; the kernel spreads connections)."""
    return max(1, -(-streams // max(1, maxconn)))
