"""``make run``: the whole system natively on one machine, supervised, no Docker."""
