"""A team MLflow store: ``mlflow server`` on a PostgreSQL backend store with one shared artifact root.

The pipeline runs unchanged against it: every stage logs to ``MLFLOW_TRACKING_URI`` when it is set
(:mod:`robustct.tracking`). ``docs/operations.md`` describes a production set-up (an existing PostgreSQL,
a shared disk or object store for artifacts); this module also starts a private PostgreSQL cluster for a
single machine or a test:

    python -m robustct.team_store --data /srv/robustct/pg --artifacts /srv/robustct/artifacts --port 5000
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000

PostgreSQL binaries are taken from ``PATH``, ``/usr/lib/postgresql/*/bin`` or the PyPI package ``pgserver``
(when installed). PostgreSQL refuses to run as root; as root the cluster runs as the ``postgres`` (else
``nobody``) account via ``runuser``. The database driver is ``psycopg`` 3 (``postgresql+psycopg://``).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "mlflow"
DB_USER = "mlflow"


class StoreStartError(RuntimeError):
    """PostgreSQL or the MLflow server could not be started (the message says which and why)."""


def find_postgres_bin() -> Path | None:
    """Folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    try:
        import pgserver  # noqa: PLC0415  (optional: PyPI pgserver ships PostgreSQL binaries)

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    for d in candidates:
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run_as() -> list[str]:
    """Command prefix that drops root (PostgreSQL will not run as root)."""
    if os.name != "posix" or os.geteuid() != 0:
        return []
    import pwd  # noqa: PLC0415

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"]
    raise StoreStartError("running as root and no `postgres`/`nobody` account with runuser to run PostgreSQL")


@dataclass
class Postgres:
    """A private PostgreSQL cluster listening on ``host:port`` only."""
    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    bin_dir: Path | None = None

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the MLflow database (trust authentication on the loopback interface)."""
        return f"postgresql+psycopg://{DB_USER}@{self.host}:{self.port}/{DB_NAME}"

    def start(self, timeout_s: float = 60) -> Postgres:
        """``initdb`` (first time), start the server, create the ``mlflow`` role and database.

        Raises:
            StoreStartError: no PostgreSQL binaries, or a command failed (its output is in the message).
        """
        self.bin_dir = self.bin_dir or find_postgres_bin()
        if self.bin_dir is None:
            raise StoreStartError("no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH, in "
                                  "/usr/lib/postgresql/*/bin or from the PyPI package pgserver")
        prefix = _run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if prefix:
            shutil.chown(self.data_dir, user=prefix[2])
            os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._cmd(prefix + [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", DB_USER,
                                "-A", "trust", "--no-sync", "-E", "UTF8"], timeout_s)
        opts = f"-h {self.host} -p {self.port} -k {self.data_dir}"
        self._cmd(prefix + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", opts,
                            "-l", str(self.data_dir / "server.log"), "-w", "-t", str(int(timeout_s)), "start"], timeout_s)
        self._create_database()
        return self

    def stop(self) -> None:
        if self.bin_dir and (self.data_dir / "postmaster.pid").is_file():
            subprocess.run(_run_as() + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                        "-w", "stop"], capture_output=True, text=True, timeout=60)

    def _create_database(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(host=self.host, port=self.port, user=DB_USER, dbname="postgres",
                             autocommit=True) as con:
            if not con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
                con.execute(f'CREATE DATABASE "{DB_NAME}"')

    @staticmethod
    def _cmd(cmd: list[str], timeout_s: float) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            exe = Path(cmd[4] if cmd[0] == "runuser" else cmd[0]).name
            raise StoreStartError(f"{exe} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")


def server_command(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000,
                   workers: int = 1, allowed_hosts: str | None = None,
                   cors_allowed_origins: str | None = None) -> list[str]:
    """``mlflow server`` with the backend store, proxied artifact serving from ``artifacts`` (a shared folder;
    an ``s3://``/``gs://`` URI works the same way), listening on ``host:port``.

    Args:
        allowed_hosts: ``--allowed-hosts``, comma-separated ``Host`` header values the server answers (patterns
            with ``*``, e.g. ``mlflow.internal,mlflow.internal:5000,localhost:*,127.0.0.1:*``). MLflow >= 3.5
            answers any other name with HTTP 403 "Invalid Host header"; its default admits only loopback
            and private IP addresses, so clients using ``http://<server name>:5000`` need it. It replaces that
            default, so list the loopback names too when local clients use them.
        cors_allowed_origins: ``--cors-allowed-origins``, comma-separated origins (``https://mlflow.internal``)
            whose browser pages may change state through the API (the UI served by the server itself needs none).
    """
    dest = artifacts if "://" in str(artifacts) else Path(artifacts).resolve().as_uri()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", str(dest), "--serve-artifacts", "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    if cors_allowed_origins:
        cmd += ["--cors-allowed-origins", cors_allowed_origins]
    return cmd


def start_server(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int | None = None,
                 log_file: Path | None = None, timeout_s: float = 180, allowed_hosts: str | None = None,
                 cors_allowed_origins: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` (:func:`server_command`) and wait until ``/health`` answers.

    Returns:
        (the server process, its tracking URI ``http://host:port``).

    Raises:
        StoreStartError: it exited or did not answer within ``timeout_s`` (last log lines in the message).
    """
    import urllib.request  # noqa: PLC0415

    port = port or free_port(host)
    Path(artifacts).mkdir(parents=True, exist_ok=True) if "://" not in str(artifacts) else None
    log = open(log_file, "w") if log_file else subprocess.DEVNULL  # noqa: SIM115  (closed with the process)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    proc = subprocess.Popen(server_command(backend_uri, Path(artifacts), host, port, allowed_hosts=allowed_hosts,
                                           cors_allowed_origins=cors_allowed_origins),
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_file).read_text()[-1500:] if log_file else ""
            raise StoreStartError(f"mlflow server exited with code {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise StoreStartError(f"mlflow server did not answer on {uri}/health within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustct.team_store", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend-store-uri", help="an existing database (e.g. postgresql+psycopg://user:pw@db/mlflow); "
                                                "default: start a private PostgreSQL in --data")
    ap.add_argument("--data", type=Path, help="folder of the private PostgreSQL cluster")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--artifacts", required=True, help="shared artifact root (folder or s3://, gs:// URI)")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--allowed-hosts", help="Host header values clients use, comma-separated (e.g. "
                    "mlflow.internal,mlflow.internal:5000,localhost:*,127.0.0.1:*); MLflow answers other names with "
                    "403 'Invalid Host header' (default: loopback and private addresses only)")
    ap.add_argument("--cors-allowed-origins", help="browser origins allowed to change state through the API, "
                    "comma-separated (e.g. https://mlflow.internal)")
    args = ap.parse_args(argv)
    pg = None
    try:
        if args.backend_store_uri:
            backend = args.backend_store_uri
        elif args.data:
            pg = Postgres(args.data.resolve(), args.pg_port).start()
            backend = pg.uri
        else:
            ap.error("give --backend-store-uri or --data")
        print(f"backend store: {backend}\nartifacts: {args.artifacts}\n"
              f"export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}", flush=True)
        return subprocess.call(server_command(backend, args.artifacts, args.host, args.port,
                                              allowed_hosts=args.allowed_hosts,
                                              cors_allowed_origins=args.cors_allowed_origins))
    except StoreStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if pg:
            pg.stop()


if __name__ == "__main__":
    sys.exit(main())
