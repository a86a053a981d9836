"""The Redis half of the contract (broker/shared-state.md) names every key the code can build."""

from __future__ import annotations

import inspect
from pathlib import Path

import broker
from common.keyspace import Keyspace

DOC = Path(broker.__file__).parent / "shared-state.md"


def test_every_keyspace_method_is_documented() -> None:
    text = DOC.read_text()
    methods = [
        name for name, _ in inspect.getmembers(Keyspace, inspect.isfunction) if not name.startswith("_")
    ]
    assert len(methods) > 20
    missing = [name for name in methods if f"`{name}`" not in text]
    assert not missing, f"add these Keyspace methods to {DOC.name}: {missing}"


def test_documented_keys_match_what_the_keyspace_builds() -> None:
    """Each documented key pattern is what the method returns (placeholders in angle brackets)."""
    text = DOC.read_text()
    keys = Keyspace("")
    samples = {
        "cancelled": (keys.cancelled("<user>", "<request>"), "`cancelled:{u:<user>}:<request>`"),
        "job": (keys.job("<user>", "<job>"), "`job:{u:<user>}:<job>`"),
        "models_available": (keys.models_available(), "`models:available`"),
        "session_turns": (keys.session_turns("<user>", "<session>"), "`session:{u:<user>}:<session>`"),
        "revoked_sid": (keys.revoked_sid("<user>", "<sid>"), "`revoked_sid:{u:<user>}:<sid>`"),
        "token_generation": (keys.token_generation("<user>"), "`token_generation:{u:<user>}`"),
    }
    for name, (built, documented) in samples.items():
        assert f"`{built}`" == documented, name
        assert documented in text, name
