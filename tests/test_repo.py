"""Checks on the repository itself: the book's table of contents, the committed notebooks,
and the settings that make stored notebook outputs reproducible."""

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Paths that only exist on somebody's machine: stored outputs must not leak them.
ABSOLUTE_PATH = re.compile(r"(/(?:tmp|home|root|work|Users)/|/private/var/|[A-Za-z]:\\\\?)")


def toc_files() -> list[str]:
    """Every `file:` entry of _toc.yml (root included), in order, without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return found


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [cell for cell in read(path).cells if cell.cell_type == "code"]


def output_text(output: nbformat.NotebookNode) -> str:
    """The text a reader sees in one output, whatever its kind."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return "\n".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "expected notebooks/*.ipynb, found none"


def test_toc_has_no_duplicates():
    files = toc_files()
    duplicates = sorted({f for f in files if files.count(f) > 1})
    assert not duplicates, f"_toc.yml lists these more than once: {duplicates}"


@pytest.mark.parametrize("entry", toc_files())
def test_toc_entry_exists(entry):
    candidates = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
    assert any(p.is_file() for p in candidates), (
        f"_toc.yml lists {entry!r} but neither {entry}.md nor {entry}.ipynb exists; "
        "add the page or remove the entry"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_toc(path):
    entry = f"notebooks/{path.stem}"
    assert entry in toc_files(), f"{path.name} is not in _toc.yml: add `- file: {entry}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_name(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), (
        f"{path.name}: expected NN_topic.ipynb (two digits, lower-case words joined by _)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid(path):
    nbformat.validate(read(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed(path):
    # nbval never compares a cell stored without an execution count.
    missing = [
        i for i, cell in enumerate(code_cells(path)) if cell.source.strip() and cell.execution_count is None
    ]
    assert not missing, (
        f"{path.name}: code cells {missing} (0-based, code cells only) have no execution "
        "count; run `make notebooks NB=notebooks/" + path.name + "` and commit the result"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_execution_counts_are_in_order(path):
    counts = [c.execution_count for c in code_cells(path) if c.execution_count is not None]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1, 2, 3, ...: the notebook was "
        "run out of order; re-run it with `make notebooks`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_contain_no_absolute_paths(path):
    leaks = []
    for i, cell in enumerate(code_cells(path)):
        for output in cell.get("outputs", []):
            for match in ABSOLUTE_PATH.finditer(output_text(output)):
                leaks.append((i, match.group(0)))
    assert not leaks, (
        f"{path.name}: stored outputs show machine paths (code cell, match): {leaks}; "
        "print paths relative to the repository or a temporary folder's name only"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_fastervit(path):
    sources = "\n".join(cell.source for cell in code_cells(path))
    assert re.search(r"^\s*(import fastervit|from fastervit[\s.])", sources, re.MULTILINE), (
        f"{path.name}: no `import fastervit` / `from fastervit... import`; every chapter "
        "checks its code against the package"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_plots_are_drawn_inline(path):
    # The tests and `make notebooks` run with MPLBACKEND=Agg, which shows no figure: a
    # notebook that plots must switch to the inline backend itself, or the book has no plots.
    sources = "\n".join(cell.source for cell in code_cells(path))
    if re.search(r"^\s*(import matplotlib|from matplotlib)", sources, re.MULTILINE):
        assert "%matplotlib inline" in sources, (
            f"{path.name} imports matplotlib but never runs `%matplotlib inline`; "
            "put it in the first code cell"
        )


def test_notebook_env_matches_makefile():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    run_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_notebooks)
    NOTEBOOK_ENV = run_notebooks.NOTEBOOK_ENV
    makefile = (ROOT / "Makefile").read_text()
    line = re.search(r"^NOTEBOOK_ENV := (.*)$", makefile, re.MULTILINE)
    assert line, "expected a line `NOTEBOOK_ENV := ...` in the Makefile"
    make_env = dict(item.split("=", 1) for item in shlex.split(line.group(1)))
    assert make_env == NOTEBOOK_ENV, (
        "the Makefile's NOTEBOOK_ENV and scripts/run_notebooks.py's NOTEBOOK_ENV differ: "
        f"{make_env} vs {NOTEBOOK_ENV}; notebooks would be stored under other settings "
        "than the tests use"
    )


def repo_text_files() -> list[Path]:
    """Tracked and new (not ignored) files, as git sees them."""
    try:
        listed = (
            subprocess.run(
                ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed if name]
    return [p for p in paths if p.is_file() and p.suffix not in {".png", ".jpg", ".pt", ".pth"}]


def test_no_machine_paths_in_repository():
    machine_path = re.compile(r"/(work|root|home|Users)/[A-Za-z]")
    found = []
    for path in repo_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in machine_path.finditer(text)]
    assert not found, f"absolute machine paths in the repository: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_streams_are_merged(path):
    # The book shows each stream output as a box of its own: one printout, one box.
    split = []
    for i, cell in enumerate(code_cells(path)):
        names = [o.name for o in cell.get("outputs", []) if o.output_type == "stream"]
        if len(names) != len(set(names)):
            split.append(i)
    assert not split, (
        f"{path.name}: code cells {split} (0-based, code cells only) store one stream in several "
        f"outputs; run `make notebooks NB=notebooks/{path.name}`, which merges them"
    )
