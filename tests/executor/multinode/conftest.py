"""Fixtures: two network-namespace hosts (skipped, with the reason, where they cannot be made)."""

from __future__ import annotations

import pytest

from .jobs import Loopback
from ..netns import TwoHosts, unavailable_reason


@pytest.fixture
def two_hosts():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    hosts = TwoHosts.create()
    try:
        yield hosts
    finally:
        hosts.close()
    # Teardown runs after a failing test too; a leftover is an error of its own.
    assert hosts.leftovers() == [], f"namespaces or links left behind: {hosts.leftovers()}"


@pytest.fixture
def loopback():
    hosts = Loopback()
    try:
        yield hosts
    finally:
        hosts.close()

