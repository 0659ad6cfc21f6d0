"""Where the export's heavy steps run: in this process (`--engine local`), or on Ray (`--engine ray`).

Ray is the optional `[scale]` extra: nothing imports it unless `--engine ray` is given, and then a
missing extra is one line of advice. `RayEngine` starts a local Ray on this machine (no address) or
joins a running cluster (`--ray-address auto` or `ray://host:port`), and shuts down only a Ray it
started itself. The jobs that run on it are in ray_jobs.py.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from edge_search.errors import ExportError

ENGINES = ("local", "ray")
SCALE_EXTRA = "pip install 'edge-search[scale]'"
CONNECT_SECONDS = 5.0


@dataclass(frozen=True)
class EngineSettings:
    name: str = "local"
    address: str | None = None  # None: start a local Ray on this machine; "auto": join the running cluster
    workers: int | None = None  # actors in each pool; None: one per CPU the cluster offers
    cpus: int | None = None  # CPUs of a Ray started here (None: all of this machine's)
    batch: int = 32  # images per batch sent to a worker

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ExportError(f"--engine must be one of {', '.join(ENGINES)}, got {self.name!r}")
        if self.name == "local" and (self.address is not None or self.workers is not None):
            raise ExportError("--ray-address and --ray-workers go with --engine ray")
        if self.workers is not None and self.workers < 1:
            raise ExportError(f"--ray-workers must be 1 or more, got {self.workers}")
        if self.cpus is not None and self.cpus < 1:
            raise ExportError(f"a local Ray needs 1 CPU or more, got {self.cpus}")
        if self.batch < 1:
            raise ExportError(f"engine batch must be 1 or more, got {self.batch}")

    @property
    def ray(self) -> bool:
        return self.name == "ray"


def need_scale_extra() -> None:
    missing = [m for m in ("ray", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--engine ray needs the [scale] extra ({', '.join(missing)} not installed): {SCALE_EXTRA}")


def check_reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """The head named by `--ray-address HOST:PORT` (or `ray://HOST:PORT`) accepts a TCP connection. Ray
    itself retries an address nobody answers for minutes, printing its C++ warnings; the export command
    checks this before it reads the catalog, so a silent head is one line at once.
    `auto` and `local` are Ray's to resolve (it fails fast when no cluster runs here)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExportError(f"--ray-address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ExportError(f"--ray-address {address}: nothing answers there ({reason}); is the cluster's head "
                          "running, and is the port its GCS (or Ray Client) port?") from None


class RayEngine:
    """A Ray session for one export: `with RayEngine(settings) as engine: ...`."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.started = False
        self.workers = 1

    def __enter__(self) -> "RayEngine":
        need_scale_extra()
        import ray
        import ray.data

        # Ray's own log lines (token set-up, execution plans, "progress bars disabled", and a failed task's
        # traceback before it raises) are not the export's: a failure reaches the CLI as one line
        # (ray_jobs._cause), and the details stay in Ray's session logs
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if not ray.is_initialized():
            s = self.settings
            try:
                ray.init(address=s.address, num_cpus=s.cpus if s.address is None else None,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"--ray-address {s.address}" if s.address else "a local Ray"
                raise ExportError(f"{where}: cannot start or join Ray ({str(e).splitlines()[0]})") from None
            self.started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows one bar per step, as the local engine does
        ctx.verbose_progress = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = self.settings.workers or max(1, cpus)
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def record(self) -> dict:
        """The manifest's `build` record."""
        import ray

        return {"engine": "ray", "workers": self.workers, "ray": ray.__version__,
                "address": self.settings.address or "local"}


LOCAL_RECORD = {"engine": "local", "workers": 1}


@contextmanager
def open_engine(settings: EngineSettings) -> Iterator[RayEngine | None]:
    """A RayEngine for `--engine ray`, None for the local engine."""
    if not settings.ray:
        yield None
        return
    with RayEngine(settings) as engine:
        yield engine
