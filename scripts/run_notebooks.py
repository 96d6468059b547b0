"""Re-execute the book's notebooks in place and normalise them, so that diffs stay small.

Usage: python scripts/run_notebooks.py [NOTEBOOK ...]   (default: every notebooks/*.ipynb)

Each notebook runs top to bottom in a fresh kernel of this interpreter, from the
notebook's own folder, with the same environment as `make test` (NOTEBOOK_ENV below),
so that the stored outputs are the ones nbval will compare against. A cell's printouts
are merged into one output per stream (stdout, stderr), as they were printed, so that
the book shows one box per cell rather than one per flush; nbval merges them the same way
before comparing. Afterwards nbstripout drops volatile metadata (timings, widget state)
but keeps outputs and execution counts, which the tests need.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# Keep in step with NOTEBOOK_ENV in the Makefile; tests/test_repo.py checks it. They pin
# the CPU kernels and thread count (the last digits of floating-point results depend on
# both) and hide any GPU, because CI has none and the stored outputs must match CI's.
NOTEBOOK_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "MPLBACKEND": "Agg",
    "PYTHONHASHSEED": "0",
    "FASTERVIT_SIZE": "smoke",  # the stored outputs are the smoke size (fastervit/sizes.py)
    "TQDM_DISABLE": "1",  # no progress bars: their rates and times vary between runs
}
CELL_TIMEOUT_S = 1800
NBSTRIPOUT_ARGS = ["--keep-output", "--keep-count", "--extra-keys", "metadata.language_info.version"]


class CurrentEnvKernelManager(KernelManager):
    """Starts an IPython kernel with this interpreter, whatever kernelspecs are installed."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3 (ipykernel)",
            language="python",
        )


def run_notebook(path: Path) -> float:
    """Execute `path` in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        km=CurrentEnvKernelManager(),
        timeout=CELL_TIMEOUT_S,
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "nbstripout", *NBSTRIPOUT_ARGS, str(path)], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args()
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if p.suffix != ".ipynb" or not p.is_file()]
    if missing:
        sys.exit(f"expected existing .ipynb files, got: {', '.join(missing)}")
    os.environ.update(NOTEBOOK_ENV)
    for path in paths:
        print(f"{path.name}: running...", flush=True)
        print(f"{path.name}: done in {run_notebook(path.resolve()):.1f} s", flush=True)


if __name__ == "__main__":
    main()
