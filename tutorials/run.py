"""Execute the tutorial notebooks top to bottom and save their outputs in place.

    python tutorials/run.py                # every tutorials/*.ipynb, in name order
    python tutorials/run.py 01 04          # only notebooks whose file name contains 01 or 04
    make tutorials                         # the same as the first line

Each notebook runs in a fresh kernel of *this* Python interpreter (so it sees the same
installed packages), with the repository root on PYTHONPATH and the notebook's folder
as working directory. A notebook that raises is reported and left unchanged on disk.
``tests/test_notebooks.py`` uses ``execute`` from here on copies of the notebooks.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parent
ROOT = TUTORIALS.parent
KERNEL_NAME = "python3"
FALLBACK_KERNEL_NAME = "fcn-scratch"
BUDGET_S = 180  # every notebook must finish within this on 2 CPU cores


def notebooks(patterns: list[str] | None = None) -> list[Path]:
    """tutorials/*.ipynb in name order, keeping those whose name contains a pattern."""
    found = sorted(p for p in TUTORIALS.glob("*.ipynb") if not p.name.startswith("."))
    if patterns:
        found = [p for p in found if any(s in p.name for s in patterns)]
    return found


def _runs_this_python(argv: list[str]) -> bool:
    """Whether a kernelspec command starts the running interpreter.

    jupyter_client replaces a bare ``python`` / ``python3`` / ``python3.X`` with
    ``sys.executable``; a path must lie in the same ``bin`` folder. (Symlinks are not
    resolved: every virtual environment's python links to the same base interpreter.)
    """
    if not argv:
        return False
    exe = argv[0]
    major, minor = sys.version_info[:2]
    if exe in ("python", f"python{major}", f"python{major}.{minor}"):
        return True
    return Path(exe).absolute().parent == Path(sys.executable).absolute().parent


def kernel_name() -> str:
    """The name of a kernelspec that runs this interpreter, installing one if needed.

    Prefers the usual ``python3`` spec; if it is missing or launches another Python,
    installs ``fcn-scratch`` into this environment (``ipykernel install --sys-prefix``).
    """
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as e:
        raise SystemExit(
            "tutorials: running notebooks needs nbclient and ipykernel: pip install -e '.[dev]'"
        ) from e
    manager = KernelSpecManager()
    for name in (KERNEL_NAME, FALLBACK_KERNEL_NAME):
        try:
            if _runs_this_python(manager.get_kernel_spec(name).argv):
                return name
        except NoSuchKernel:
            pass
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            FALLBACK_KERNEL_NAME,
            "--display-name",
            "Python (fcn-scratch)",
        ],
        check=True,
    )
    return FALLBACK_KERNEL_NAME


def _kernel_env() -> dict[str, str]:
    """This process's environment with the repository root first on PYTHONPATH.

    MPLBACKEND is dropped: a value such as ``Agg`` (set for headless test runs) would stop
    the kernel from using its inline backend, and the notebooks would lose their pictures.
    """
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def execute(
    path: Path, out_path: Path | None = None, budget_s: float = BUDGET_S, kernel: str | None = None
) -> float:
    """Run the notebook at ``path`` in a fresh kernel; returns the wall time in seconds.

    Writes the executed notebook to ``out_path`` (default: ``path``) only if every cell
    ran without error. Raises nbclient's CellExecutionError on an error and
    CellTimeoutError when the whole notebook takes longer than ``budget_s``.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()

    def remaining(_cell) -> int:
        # Per-cell timeout = what is left of the notebook's budget (at least 1 s).
        return max(1, int(budget_s - (time.monotonic() - start)))

    client = NotebookClient(
        nb,
        kernel_name=kernel or kernel_name(),
        timeout_func=remaining,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=_kernel_env())
    elapsed = time.monotonic() - start
    nbformat.write(nb, out_path or path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="run only notebooks whose name contains one")
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET_S,
        help=f"seconds allowed per notebook (default {BUDGET_S})",
    )
    args = parser.parse_args(argv)
    paths = notebooks(args.patterns)
    if not paths:
        print(f"tutorials: no notebook in {TUTORIALS} matches {args.patterns}", file=sys.stderr)
        return 1
    kernel = kernel_name()
    failed = []
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            seconds = execute(path, budget_s=args.budget, kernel=kernel)
        except Exception as e:  # report every notebook, then fail
            print(f"FAILED: {type(e).__name__}\n{e}", flush=True)
            failed.append(path.name)
            continue
        print(f"{seconds:.1f} s", flush=True)
    if failed:
        print(f"tutorials: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
