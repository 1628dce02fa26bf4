"""Start and stop Azurite (the Azure Storage emulator, from npm) on loopback for tests and the demo.

Azurite listens on free ports so that a developer's own Azurite on 10000-10002 is left alone; the
connection string names the ports explicitly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    pass


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def find_executable(project_root: Path | None = None) -> str:
    """node_modules/.bin/azurite of the project (installed by `make setup`), else one on PATH."""
    root = project_root or Path(__file__).resolve().parents[2]
    local = root / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise AzuriteError(
        "Azurite is not installed: run `make setup` (it runs `npm install` in the project root), "
        "or `npm install -g azurite@3.35.0`"
    )


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    connection_string: str
    location: Path
    _own_location: bool

    @staticmethod
    def start(location: Path | None = None, timeout: float = 30.0, *, in_memory: bool = False) -> Azurite:
        """`in_memory` keeps the data in Azurite's memory only (benchmarks: disk I/O out of the picture);
        `location` then holds just the log."""
        exe = find_executable()
        own = location is None
        where = Path(tempfile.mkdtemp(prefix="licshift-azurite-")) if location is None else location
        where.mkdir(parents=True, exist_ok=True)
        ports = [_free_port() for _ in range(3)]
        blob, queue, table = ports
        storage = ["--inMemoryPersistence"] if in_memory else ["--location", str(where)]
        args = [
            exe, "--silent", "--disableTelemetry", "--skipApiVersionCheck", *storage,
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
        ]  # fmt: skip
        log = open(where / "azurite.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not all(_listening(p) for p in ports):
            if proc.poll() is not None:
                raise AzuriteError(f"Azurite exited with {proc.returncode}; see {where / 'azurite.log'}")
            if time.monotonic() > deadline:
                _kill(proc)
                raise AzuriteError(f"Azurite did not listen within {timeout:.0f} s; see {where / 'azurite.log'}")
            time.sleep(0.1)
        return Azurite(proc, connection_string(blob, queue, table), where, own)

    def stop(self) -> None:
        _kill(self.process)
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
