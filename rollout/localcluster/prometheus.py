"""A real Prometheus server on a loopback port, for the tests, the demo and benchmarks.

Runs Debian's `prometheus` binary (or ROLLOUT_PROMETHEUS_BIN) with our own config: a short
scrape interval over the given targets, storage in a temporary folder removed on stop.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from rollout.localcluster.errors import PrerequisiteError, StartupError
from rollout.localcluster.process import ManagedProcess, ensure_port_free, free_port

HOST = "127.0.0.1"
PROMETHEUS_BIN_ENV = "ROLLOUT_PROMETHEUS_BIN"


def prometheus_binary(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(PROMETHEUS_BIN_ENV):
        path = Path(env[PROMETHEUS_BIN_ENV])
        if not os.access(path, os.X_OK):
            raise PrerequisiteError(f"{PROMETHEUS_BIN_ENV}={path} is not an executable file")
        return path
    found = shutil.which("prometheus", path=env.get("PATH"))
    if found is None:
        raise PrerequisiteError(
            "no `prometheus` binary on PATH. Install it (Debian/Ubuntu: `sudo apt-get install "
            f"prometheus`; `make test` does this when run as root) or set {PROMETHEUS_BIN_ENV}"
        )
    return Path(found)


class LocalPrometheus:
    """`with LocalPrometheus(targets=["127.0.0.1:9101"]) as prom: prom.url ...`"""

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_interval: str = "1s",
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._proc: ManagedProcess | None = None
        self._workdir: Path | None = None
        self._binary = Path("prometheus")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": "targets", "static_configs": [{"targets": self.targets}]}
            ],
        }

    def start(self) -> None:
        self._binary = prometheus_binary()
        if self._requested_port is not None:
            ensure_port_free(self._requested_port, "prometheus")
        self.port = self._requested_port or free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix="rollout-prometheus-"))
        (self._workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config()))
        self._launch()

    def _launch(self) -> None:
        assert self._workdir is not None
        self._proc = ManagedProcess(
            "prometheus",
            [
                str(self._binary),
                f"--config.file={self._workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            self._workdir / "prometheus.log",
        )
        self._proc.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._ready():
            if not self._proc.running():
                log = self._proc.log_tail()
                self.stop()
                raise StartupError(f"prometheus exited during start-up:\n{log}")
            if time.monotonic() > deadline:
                log = self._proc.log_tail()
                self.stop()
                raise StartupError(f"prometheus not ready in {self._startup_timeout:.0f}s:\n{log}")
            time.sleep(0.05)

    def suspend(self) -> None:
        """Stop the server but keep its port and data: an outage, for tests and the demo."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def resume(self) -> None:
        """Start the server again after `suspend()`, on the same port with the same data."""
        if self._proc is None and self._workdir is not None:
            self._launch()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _ready(self) -> bool:
        try:
            return self._get("/-/ready")[0] == 200
        except OSError:
            return False

    def wait_for_scrapes(self, samples: int = 2, timeout: float = 30.0) -> None:
        """Block until every target has been scraped successfully `samples` times."""
        deadline = time.monotonic() + timeout
        query = "/api/v1/query?query=count_over_time(up%5B1h%5D)%20and%20up%20%3D%3D%201"
        while True:
            status, body = self._get(query)
            if status == 200:
                results = json.loads(body)["data"]["result"]
                counts = [float(r["value"][1]) for r in results]
                if len(counts) >= len(self.targets) and all(c >= samples for c in counts):
                    return
            if time.monotonic() > deadline:
                raise StartupError(f"prometheus did not scrape {self.targets} in {timeout:.0f}s")
            time.sleep(0.2)
