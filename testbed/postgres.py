"""A throwaway PostgreSQL server on loopback (Debian's ``postgresql`` package), for tests and benchmarks.

``initdb`` a temporary folder, start ``postgres`` on a free port with trust authentication,
yield its URL, stop it and remove the folder. PostgreSQL refuses to run as root: as root, the
folder (directly in the system's temporary folder, which every user can reach) is given to
the ``postgres`` user the package creates and the server runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from research.testbed.processes import free_port


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them under /usr/lib/postgresql/N/bin), or None."""
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _as_user(user: str | None) -> dict[str, object]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "env": {**os.environ, "HOME": entry.pw_dir}}


class Postgres:
    """One PostgreSQL server: :meth:`start`, :meth:`stop` (and start again: the data stays), :meth:`remove`."""

    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin, self.port = bin_dir, free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="research-postgres-"))
        if self.user is not None:
            shutil.chown(self.folder, self.user, self.user)
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, **_as_user(self.user))  # type: ignore[call-overload]
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "log"), "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        with suppress(RuntimeError):  # not running
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop it and remove its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL server for the block; its URL is ``.url``."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
