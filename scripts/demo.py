#!/usr/bin/env python3
"""``make demo``: run every notebook in examples/ through a real Jupyter server, in containers.

What it does, in order:

1. copies the notebooks to ``artifacts/demo/notebooks`` (the repository stays clean; the
   executed notebooks, with their outputs, are left there to open afterwards);
2. installs a tfenv kernelspec for the TensorFlow ``-jupyter`` image into a private Jupyter data
   dir and starts ``jupyter server`` on a free loopback port (``jupyter_tfenv.testing``);
3. executes each notebook through the server's REST and websocket API, as a browser would, so
   every kernel runs in a container started by the provisioner; outputs are printed as they
   arrive, and images are saved under ``artifacts/demo/outputs``;
4. stops the server, removes any container of this run that is left (found by the run's own
   ``org.jupyter-tfenv.owner`` label value, nothing else), and prints a summary.

It exits non-zero when a cell fails, a notebook times out, or a container was left behind.
The kernels' HOME volume (``tfenv-home-<kernelspec>``) is kept on purpose: it is the cache that
the product keeps across kernel restarts.

Run it after ``make setup engine images`` (``make demo`` does all of it)::

    .venv/bin/python scripts/demo.py [--image IMAGE] [--notebook NAME] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from jupyter_tfenv import engine
from jupyter_tfenv.kernelspecs import install_kernelspec, kernel_name_for
from jupyter_tfenv.server_run import ServerSession, run_notebook
from jupyter_tfenv.testing import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "examples"
DEFAULT_WORK = REPO_ROOT / "artifacts" / "demo"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# What the example notebooks print in their first cells; the summary reports the kernel's own
# view (the image it ran in, the TensorFlow it imported), not what the demo asked for.
TF_VERSION_LINE = re.compile(r"^TensorFlow (\d+\.\d+\.\d+\S*?),", re.MULTILINE)
IMAGE_LINE = re.compile(r"^Image: (\S+)", re.MULTILINE)

Printer = Callable[[str], None]


def load_devenv() -> ModuleType:
    """scripts/devenv.py, for the test image names (it is a script, not a package)."""
    path = REPO_ROOT / "scripts" / "devenv.py"
    spec = importlib.util.spec_from_file_location("tfenv_devenv", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the file executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def default_image() -> str:
    """The TensorFlow -jupyter test image, or the official tag with TFENV_TEST_IMAGES=official."""
    devenv = load_devenv()
    return str(devenv.image_name("tf-jupyter", devenv.images_mode()))


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (shorter lines), else absolute."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class NotebookResult:
    """How one notebook went, as the summary and the tests see it."""

    notebook: str
    code_cells: int
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    image: str = ""
    tensorflow: str = ""
    images_saved: list[str] = field(default_factory=list)
    files_written: list[str] = field(default_factory=list)
    stdout: str = ""
    executed: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class DemoReport:
    """Everything a demo run found; ``ok`` only when every notebook ran and nothing was left."""

    image: str
    kernel_name: str
    owner: str
    notebooks: list[NotebookResult]
    server_seconds: float = 0.0
    leftovers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.notebooks) and not self.leftovers


class OutputPrinter:
    """Prints cell outputs as they arrive and saves images; collects what the summary needs."""

    def __init__(self, stem: str, outputs_dir: Path, out: Printer) -> None:
        self.stem = stem
        self.outputs_dir = outputs_dir
        self.out = out
        self.current_cell = -1
        self.images_saved: list[Path] = []
        self.stdout: list[str] = []

    def __call__(self, cell_index: int, output: dict[str, Any]) -> None:
        if cell_index != self.current_cell:
            self.current_cell = cell_index
            self.out(f"  --- cell {cell_index} ---")
        kind = output["output_type"]
        if kind == "stream":
            text = str(output["text"])
            if output.get("name") == "stdout":
                self.stdout.append(text)
            self._text(text, "" if output.get("name") == "stdout" else "[stderr] ")
        elif kind in ("display_data", "execute_result"):
            self._rich(output["data"])
        elif kind == "error":
            self.out(f"  [error] {output['ename']}: {output['evalue']}")
            self._text(ANSI_ESCAPE.sub("", "\n".join(output.get("traceback", []))), "")

    def _text(self, text: str, prefix: str) -> None:
        for line in text.rstrip("\n").split("\n"):
            self.out(f"  | {prefix}{line}")

    def _rich(self, data: dict[str, Any]) -> None:
        if "image/png" in data:
            payload = base64.b64decode(data["image/png"])
            self.outputs_dir.mkdir(parents=True, exist_ok=True)
            path = self.outputs_dir / f"{self.stem}-{len(self.images_saved) + 1}.png"
            path.write_bytes(payload)
            self.images_saved.append(path)
            self.out(f"  [image/png {len(payload)} bytes saved to {shown(path)}]")
        elif "text/plain" in data:
            plain = data["text/plain"]
            self._text("".join(plain) if isinstance(plain, list) else str(plain), "")
        else:
            self.out(f"  [{', '.join(sorted(data))}]")


def code_cell_count(path: Path) -> int:
    notebook = json.loads(path.read_text())
    return sum(1 for cell in notebook.get("cells", []) if cell.get("cell_type") == "code")


def list_files(folder: Path) -> dict[str, float]:
    """Files under ``folder`` with their modification times, to see what a notebook wrote."""
    return {
        str(path.relative_to(folder)): path.stat().st_mtime
        for path in folder.rglob("*")
        if path.is_file() and ".ipynb_checkpoints" not in path.parts
    }


def owned_containers(owner: str) -> list[dict[str, Any]]:
    """Containers (running or not) that carry this run's owner label value."""
    client = engine.get_client()
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{engine.LABEL_OWNER}={owner}"}
    )
    return found


def sweep_containers(owner: str) -> list[str]:
    """Remove this run's containers (by label value only); return 'short id (image, state)'."""
    client = engine.get_client()
    removed = []
    for summary in owned_containers(owner):
        engine.remove_container_id(client, summary["Id"])
        removed.append(f"{summary['Id'][:12]} ({summary.get('Image')}, {summary.get('State')})")
    return removed


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


async def run_one(
    session: ServerSession,
    source: Path,
    notebooks_dir: Path,
    outputs_dir: Path,
    kernel_name: str,
    timeout: float,
    out: Printer,
) -> NotebookResult:
    """Execute one copied notebook through the server; never raises for a failing notebook."""
    result = NotebookResult(notebook=source.name, code_cells=code_cell_count(source))
    printer = OutputPrinter(source.stem, outputs_dir, out)
    before = list_files(notebooks_dir)
    out(f"\n=== {source.name}: {result.code_cells} code cells, kernel {kernel_name} ===")
    start = time.monotonic()
    try:
        result.executed = await run_notebook(
            session, source.name, kernel_name, timeout=timeout, on_output=printer
        )
        result.ok = True
    except Exception as error:  # the summary reports it; the demo goes on with the next one
        result.error = f"{type(error).__name__}: {error}"
        out(f"  FAILED: {result.error}")
    result.seconds = time.monotonic() - start

    result.stdout = "".join(printer.stdout)
    result.images_saved = [shown(path) for path in printer.images_saved]
    version = TF_VERSION_LINE.search(result.stdout)
    image = IMAGE_LINE.search(result.stdout)
    result.tensorflow = version.group(1) if version else ""
    result.image = image.group(1) if image else ""
    after = list_files(notebooks_dir)
    result.files_written = sorted(
        name for name, mtime in after.items() if name != source.name and before.get(name) != mtime
    )
    if result.files_written:
        out(f"  files the kernel wrote next to the notebook: {', '.join(result.files_written)}")
    return result


async def run_demo(
    image: str,
    notebooks: list[Path],
    work: Path,
    owner: str,
    timeout: float = 600,
    out: Printer = print,
) -> DemoReport:
    """Run ``notebooks`` through a fresh server whose kernels run in ``image``.

    ``work`` receives notebooks/ (executed copies), outputs/ (images), jupyter/ (the server's
    private config, data and runtime dirs, and its log). Containers are labelled with ``owner``.
    """
    notebooks_dir = fresh_dir(work / "notebooks")
    outputs_dir = fresh_dir(work / "outputs")
    home = fresh_dir(work / "jupyter")
    for source in notebooks:
        shutil.copy2(source, notebooks_dir / source.name)

    kernel_name = kernel_name_for(image, "none")
    report = DemoReport(image=image, kernel_name=kernel_name, owner=owner, notebooks=[])
    server = ServerProcess(notebooks_dir, home, extra_env={"TFENV_OWNER_LABEL": owner})
    install_kernelspec(
        image, name=kernel_name, manager=KernelSpecManager(data_dir=str(server.data_dir))
    )
    out(f"kernelspec {kernel_name} -> {image} (in {shown(server.data_dir)})")
    start = time.monotonic()
    try:
        server.start()
        report.server_seconds = time.monotonic() - start
        out(
            f"jupyter server on {server.url} (up in {report.server_seconds:.1f} s, "
            f"log {shown(server.log_path)}), container owner label {owner}"
        )
        session = ServerSession(server.url, server.token)
        for source in notebooks:
            result = await run_one(
                session, source, notebooks_dir, outputs_dir, kernel_name, timeout, out
            )
            report.notebooks.append(result)
            # Deleting the session shuts its kernel down; the container must be gone with it.
            alive = owned_containers(owner)
            if alive:
                ids = ", ".join(item["Id"][:12] for item in alive)
                out(f"  WARNING: kernel container(s) still present after shutdown: {ids}")
    finally:
        server.stop()
        report.leftovers = sweep_containers(owner)
        if report.leftovers:
            out(f"WARNING: removed leftover containers of this run: {report.leftovers}")
    return report


def print_summary(report: DemoReport, total_seconds: float, out: Printer = print) -> None:
    headers = ("notebook", "code cells", "seconds", "result", "container image", "TensorFlow")
    rows = [
        (
            result.notebook,
            str(result.code_cells),
            f"{result.seconds:.1f}",
            "ok" if result.ok else "FAILED",
            result.image or "?",
            result.tensorflow or "?",
        )
        for result in report.notebooks
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    out("\n=== summary ===")
    for row in [headers, *rows]:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for result in report.notebooks:
        if result.error:
            out(f"{result.notebook}: {result.error}")
    left = f"{len(report.leftovers)} removed (a bug)" if report.leftovers else "none"
    out(
        f"kernelspec {report.kernel_name} -> {report.image}; containers left after the run: "
        f"{left}; total {total_seconds:.1f} s"
    )
    out("demo " + ("passed" if report.ok else "FAILED"))


def write_summary(report: DemoReport, work: Path) -> Path:
    data = asdict(report)
    for item in data["notebooks"]:
        item.pop("executed", None)
        item.pop("stdout", None)
    data["ok"] = report.ok
    path = work / "summary.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--image", help="kernel image (default: the TF -jupyter test image)")
    parser.add_argument(
        "--notebook",
        action="append",
        metavar="NAME",
        help="run only this notebook of examples/ (repeatable); default: all",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="output folder")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    args = parser.parse_args(argv)

    notebooks = sorted(EXAMPLES_DIR.glob("*.ipynb"))
    if args.notebook:
        wanted = {name if name.endswith(".ipynb") else f"{name}.ipynb" for name in args.notebook}
        unknown = wanted - {path.name for path in notebooks}
        if unknown:
            known = ", ".join(path.name for path in notebooks)
            parser.error(f"no notebook {', '.join(sorted(unknown))} in examples/ (known: {known})")
        notebooks = [path for path in notebooks if path.name in wanted]
    if not notebooks:
        print(f"demo FAILED: no notebooks in {EXAMPLES_DIR}", file=sys.stderr)
        return 1

    image = args.image or default_image()
    owner = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    work = args.work.resolve()
    start = time.monotonic()
    try:
        report = asyncio.run(run_demo(image, notebooks, work, owner, args.timeout))
    except Exception as error:
        print(
            f"demo FAILED before the notebooks ran: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 1
    print_summary(report, time.monotonic() - start)
    print(
        f"executed notebooks in {shown(work / 'notebooks')}, summary in "
        f"{shown(write_summary(report, work))}"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
