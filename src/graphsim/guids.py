"""GUIDs the way Graph treats them: validated, compared in lower case, generated deterministically.

graphsim keeps its own GUID handling (it never imports licshift): it is the independent referee.
"""

from __future__ import annotations

import random
import re
import uuid

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


def norm(value: str) -> str:
    """Lower-case a GUID already known to be valid."""
    return value.lower()


class GuidSource:
    """Deterministic version-4 GUIDs from a seed, so a scenario builds the same tenant every time."""

    def __init__(self, seed: int | str) -> None:
        self._rng = random.Random(f"graphsim-guids:{seed}")

    def next(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
