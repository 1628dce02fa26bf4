"""What the storage adapters share: each owns an SDK service client, the per-table or per-queue
clients made from it and, when it was given one to own, a credential; `aclose()` (or `async with`)
releases all of them, clients first."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from licshift.settings import StorageSettings


class Closable(Protocol):
    async def close(self) -> None: ...


class OwnsClients:
    _service: Closable
    _clients: Mapping[str, Closable]
    _credential: Closable | None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def storage_credential(
    storage: StorageSettings, given: AsyncTokenCredential | None
) -> tuple[AsyncTokenCredential, bool]:
    """The credential for identity-based storage, and whether the adapter owns it (closes it): the
    caller's (the CLI's signed-in identity), else the app's managed identity (a user-assigned one when
    LicshiftStorage__clientId names it)."""
    if given is not None:
        return given, False
    from azure.identity.aio import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=storage.client_id), True


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "no_proxy", "netrc")


def environment_settings(environ: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, Any]:
    """The SDK client option that turns off reading proxies and ~/.netrc from the environment when
    there are none to read. aiohttp (azure-core's async transport) looks them up again on every
    request, in a worker thread: about 6% of the host's CPU per removal (py-spy, bench/README.md).
    Where a proxy variable or a netrc file exists, the SDK default (read them) is kept."""
    environ = os.environ if environ is None else environ
    names = {name.lower() for name, value in environ.items() if value}
    netrc = (home if home is not None else Path(environ.get("HOME") or "~").expanduser()) / ".netrc"
    if names.intersection(_PROXY_VARIABLES) or netrc.exists():
        return {}
    return {"use_env_settings": False}
