"""The book builds with every warning an error, and the built HTML loads nothing from the
network: math, figures and the bibliography all come from local files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = ROOT / ".mathjax" / "static" / "mathjax" / "startup.js"
# Attributes through which a page makes the browser fetch something by itself.
REMOTE_IN_HTML = re.compile(
    r"<(?:script|img|iframe|source|audio|video|embed|link)\b[^>]*?\b(?:src|href|srcset)="
    r"[\"']((?:https?:)?//[^\"']+)",
    re.IGNORECASE,
)
REMOTE_IN_CSS = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])((?:https?:)?//[^\"')\s]+)")
# Hosts that serve scripts, styles or fonts, which a script could load at run time.
CDN_HOSTS = re.compile(
    r"(?:https?:)?//(?:[\w-]+\.)*(?:jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|"
    r"googleapis\.com|gstatic\.com|bootstrapcdn\.com|mathjax\.org|polyfill\.io|"
    r"plausible\.io|googletagmanager\.com|hypothes\.is|utteranc\.es|mybinder\.org)[^\s\"')]*"
)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    if not MATHJAX.is_file():
        pytest.fail(f"{MATHJAX.relative_to(ROOT)} is missing: run `make mathjax` (make test does)")
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"the book did not build:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return out / "_build" / "html"


def files(root: Path, *suffixes: str) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in suffixes)


def test_pages_load_nothing_remote(html):
    remote = [
        (str(page.relative_to(html)), url)
        for page in files(html, ".html")
        for url in REMOTE_IN_HTML.findall(page.read_text(encoding="utf-8"))
    ]
    assert not remote, f"pages that fetch from the network: {remote}"


def test_styles_load_nothing_remote(html):
    remote = [
        (str(css.relative_to(html)), url)
        for css in files(html, ".css")
        for url in REMOTE_IN_CSS.findall(css.read_text(encoding="utf-8"))
    ]
    assert not remote, f"stylesheets that fetch from the network: {remote}"


def test_no_cdn_addresses(html):
    found = [
        (str(path.relative_to(html)), match.group(0))
        for path in files(html, ".html", ".js", ".css")
        for match in CDN_HOSTS.finditer(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not found, f"CDN addresses in the built book: {found}"


def test_math_is_rendered_by_local_mathjax(html):
    intro = (html / "book" / "intro.html").read_text(encoding="utf-8")
    assert '<script defer="defer" src="../_static/mathjax/startup.js' in intro
    assert (html / "_static" / "mathjax" / "startup.js").is_file()
    assert list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert r"\Omega_{\text{global}}" in intro, "the displayed equation is missing from intro"


def test_bibliography_and_citations(html):
    bibliography = (html / "book" / "bibliography.html").read_text(encoding="utf-8")
    assert "fast vision transformers with hierarchical attention" in bibliography.lower()
    intro = (html / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r'href="bibliography\.html#id\d+"', intro), "intro cites nothing"


def test_figures_are_copied(html):
    assert (html / "_images" / "attention_cost.png").is_file()
