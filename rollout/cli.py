"""The `rollout` command line."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from rollout.localcluster import (
    CRDS_ENV,
    LocalControlPlane,
    PrerequisiteError,
    StartupError,
    default_crd_dirs,
)

app = typer.Typer(
    help="Progressive delivery of LLM model versions behind Envoy AI Gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(
    help="A local Kubernetes control plane (etcd + kube-apiserver).", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")

# soft_wrap: error messages stay one line, so they can be grepped and copied.
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@cluster_app.command("start")
def cluster_start(
    kubeconfig: Path = typer.Option(
        ..., "--kubeconfig", help="Where to write the admin kubeconfig once the cluster is ready."
    ),
    crds: list[Path] = typer.Option(
        None, "--crds", help=f"CRD folder (repeatable). Default: ${CRDS_ENV} or ../shared/crds."
    ),
    port: int | None = typer.Option(None, help="kube-apiserver port (default: a free one)."),
) -> None:
    """Start etcd + kube-apiserver with the CRDs installed; run until Ctrl-C / SIGTERM.

    The kubeconfig file is written only once the API server is ready and every CRD is
    established, so `until [ -f KUBECONFIG ]; do sleep 1; done` is a readiness check.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    plane = LocalControlPlane(
        crd_dirs=crds or default_crd_dirs(),
        port=port,
        progress=lambda msg: err.print(f"[dim]{msg}[/]", highlight=False),
    )
    try:
        plane.start()
    except (PrerequisiteError, StartupError) as exc:
        raise fail(str(exc)) from None
    try:
        plane.write_kubeconfig(kubeconfig)
        err.print(
            f"[green]ready[/] in {time.monotonic() - started:.1f}s: {plane.url}\n"
            f"  export KUBECONFIG={kubeconfig.resolve()}\n"
            "  Ctrl-C stops the cluster and removes its data.",
            highlight=False,
        )
        stop.wait()
    finally:
        plane.stop()
        kubeconfig.unlink(missing_ok=True)
        err.print("stopped")


def main() -> None:
    app(prog_name="rollout")
