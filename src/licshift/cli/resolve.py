"""Wave ids as admins type them: the full id, or any unique prefix (the 8 characters the CLI prints)."""

from __future__ import annotations

import re

from licshift.cli.exitcodes import UsageError
from licshift.cli.output import short_id
from licshift.cli.storage import Storage
from licshift.rules.licenses import guid, is_guid

_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


def check_wave_ref(ref: str) -> str:
    """Refuse what can never be a wave id before any storage is touched."""
    text = ref.strip()
    if not _PREFIX.fullmatch(text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(
            f"{shown!r} is not a wave id or the start of one (hex digits and dashes, e.g. c9e5bf56); "
            "list waves with `licshift status`"
        )
    return text.lower()


async def wave_id(storage: Storage, ref: str) -> str:
    """The full id of the one wave `ref` names; UsageError when none or several match."""
    text = check_wave_ref(ref)
    if is_guid(text):
        return guid(text)
    matches = sorted(w.wave_id for w in await storage.ledger.list_waves() if w.wave_id.startswith(text))
    if not matches:
        raise UsageError(f"no wave id starts with {text}; list waves with `licshift status`")
    if len(matches) > 1:
        shown = ", ".join(short_id(m) for m in matches[:8])
        raise UsageError(f"{text} matches {len(matches)} waves ({shown}); type more of the id")
    return matches[0]
