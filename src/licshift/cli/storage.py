"""The admin's handle on the function app's storage: the ledger (tables) and the waves queue.

A connection string (Azurite locally), or the service URIs and the signed-in identity (`az login`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from licshift.adapters.ledger import Ledger
from licshift.adapters.queues import StorageQueues
from licshift.cli.exitcodes import EnvironmentProblem
from licshift.settings import STORAGE_CONNECTION, Settings, SettingsError


@dataclass(frozen=True)
class Storage:
    ledger: Ledger
    queue: StorageQueues
    settings: Settings


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    credential = None
    if settings.storage.uses_identity:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    ledger: Ledger | None = None
    try:
        ledger = Ledger.from_settings(settings, credential)
        queue = StorageQueues.from_settings(settings, credential)
    except ValueError as exc:  # SettingsError, or the SDK refusing a malformed connection string
        if ledger is not None:
            await ledger.aclose()
        if credential is not None:
            await credential.close()
        if isinstance(exc, SettingsError):
            raise EnvironmentProblem(str(exc)) from None
        raise EnvironmentProblem(
            f"{STORAGE_CONNECTION} is not a usable connection string ({exc}); set it to the storage account's "
            "connection string, or UseDevelopmentStorage=true for Azurite"
        ) from None
    try:
        yield Storage(ledger, queue, settings)
    finally:
        await ledger.aclose()
        await queue.aclose()
        if credential is not None:
            await credential.close()
