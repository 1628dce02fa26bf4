"""What the storage adapters share: each owns an SDK service client, the per-table or per-queue
clients made from it and, when it was given one to own, a credential; `aclose()` (or `async with`)
releases all of them, clients first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, Self

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
