"""Shared fixtures. Azurite is started once per test session on free loopback ports and stopped by
its process id at the end, unless LICSHIFT_TEST_STORAGE names a storage connection string to use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from licshift_local.azurite import Azurite


@pytest.fixture(scope="session")
def storage_connection_string() -> Iterator[str]:
    given = os.environ.get("LICSHIFT_TEST_STORAGE")
    if given:
        yield given
        return
    azurite = Azurite.start()
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()
