"""The book builds with every warning an error, the built HTML loads nothing from the
network (math, figures and the bibliography all come from local files), and it stays
readable: no raw TeX, no broken reference, outputs within the column, sharp figures,
numbered chapters, bibliography labels that match the citations."""

import functools
import json
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
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
    for name in ("attention_cost.png", "network.png", "hat_block.png"):
        assert (html / "_images" / name).is_file(), f"{name} is not in the built book"


# ---------------------------------------------------------------------------------------
# Checks that keep the book readable. Each reports every offender of a page; pages are the
# parameters, so that a failure names the page. Every page passes every check: none is
# marked as expected to fail.

# The column, measured in headless Chromium on a built page (test_column_measured_in_chromium
# repeats the measurement where Chromium is installed): the theme's output column holds 84
# characters of its 14 px code font in a 1366 px wide window and 89 at its widest; 80 fit from
# a window of about 1330 px. Outputs are images of at most COLUMN_PX CSS pixels there.
COLUMN_CHARS = 80
COLUMN_PX = 790
MIN_DPI = 150
CSS_PX_PER_INCH = 96
CHAPTERS = [f"notebooks/{path.stem}" for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
PAGES = CHAPTERS + [f"book/{path.stem}" for path in sorted((ROOT / "book").glob("*.md"))]
# Elements whose text is not prose: math (rendered by MathJax from its TeX), code, scripts.
NOT_PROSE = {"script", "style", "pre", "code", "math", "svg", "textarea"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
RAW_TEX = re.compile(r"\\[A-Za-z]{2,}|\$[^$\s]")


class _Page(HTMLParser):
    """One built page: its prose text, the lines of its cell outputs, its images and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, not prose, in an output)
        self.prose: list[str] = []
        self.output_text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag in VOID:
            return
        classes = attrs.get("class", "").split()
        hidden = tag in NOT_PROSE or "math" in classes or "highlight" in classes
        parent_hidden, parent_output = self.stack[-1][1:] if self.stack else (False, False)
        self.stack.append((tag, parent_hidden or hidden, parent_output or "cell_output" in classes))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        hidden, output = self.stack[-1][1:] if self.stack else (False, False)
        if output and self.stack[-1][0] in ("pre", "span"):
            self.output_text.append(data)
        elif not hidden:
            self.prose.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@functools.cache
def ids(path: Path) -> set[str]:
    """The element ids of a built page (the anchors links may point at)."""
    return parse(path).ids


def png_width(path: Path) -> int:
    """Width in pixels from a PNG's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">I", header[16:20])[0]


def displayed_width(image: dict[str, str], natural: int) -> float:
    """CSS pixels an image takes in the widest column: its width attribute or style (a
    percentage is of the column), else its natural width; never more than the column."""
    style = re.search(r"width:\s*([\d.]+)(px|%)", image.get("style", ""))
    if style:
        value = float(style.group(1))
        width = value / 100 * COLUMN_PX if style.group(2) == "%" else value
    elif image.get("width", "").rstrip("px").replace(".", "").isdigit():
        width = float(image["width"].rstrip("px"))
    else:
        width = natural
    return min(width, COLUMN_PX)


def built(html: Path, page: str) -> Path:
    return html / f"{page}.html"


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_tex_outside_math(html, page):
    text = "".join(parse(built(html, page)).prose)
    found = [text[max(0, m.start() - 30) : m.end() + 30].replace("\n", " ") for m in RAW_TEX.finditer(text)]
    assert not found, f"{page}: TeX shown as text (not inside math): {found}"


@pytest.mark.parametrize("page", PAGES)
def test_no_unresolved_references(html, page):
    path = built(html, page)
    source = path.read_text(encoding="utf-8")
    problems = re.findall(r'class="[^"]*problematic[^"]*"[^>]*>([^<]*)', source)
    broken = []
    for href in parse(path).links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("//"):
            continue  # another site, mailto:, javascript:
        target, _, fragment = href.partition("#")
        file = (path.parent / target).resolve() if target else path
        missing_anchor = fragment and file.suffix == ".html" and fragment not in ids(file)
        if not file.is_file() or missing_anchor:
            broken.append(href)
    assert not problems and not broken, (
        f"{page}: unresolved references {problems}, links to missing files or anchors {broken}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_output_lines_fit_the_column(html, page):
    lines = "".join(parse(built(html, page)).output_text).splitlines()
    wide = [f"{len(line)}: {line[:60]}..." for line in lines if len(line) > COLUMN_CHARS]
    assert not wide, f"{page}: output lines wider than {COLUMN_CHARS} characters: {wide}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_code_lines_fit_the_column(page):
    """Every line of a chapter's code cells fits the column (no build needed: the source)."""
    notebook = json.loads((ROOT / f"{page}.ipynb").read_text(encoding="utf-8"))
    wide = [
        f"{len(line)}: {line.strip()[:50]}..."
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if len(line) > COLUMN_CHARS
    ]
    assert not wide, f"{page}: code lines wider than {COLUMN_CHARS} characters: {wide}"


@pytest.mark.parametrize("page", PAGES)
def test_figures_have_150_dpi(html, page):
    path = built(html, page)
    low = []
    for image in parse(path).images:
        file = (path.parent / image["src"]).resolve()
        if file.suffix != ".png":
            continue
        natural = png_width(file)
        dpi = natural / displayed_width(image, natural) * CSS_PX_PER_INCH
        if dpi < MIN_DPI:
            low.append(f"{file.name[:16]}: {dpi:.0f} dpi")
    assert not low, f"{page}: figures under {MIN_DPI} dpi at their displayed size: {low}"


def test_chapters_are_numbered(html):
    for page in CHAPTERS:
        number = int(Path(page).name[:2])
        title = re.search(r"<title>(.*?)</title>", built(html, page).read_text(encoding="utf-8"))
        assert title and title.group(1).startswith(f"{number}. "), (
            f"{page}: the page title {title and title.group(1)!r} does not start with '{number}. '"
        )


@pytest.mark.parametrize("page", CHAPTERS)
def test_displayed_tables_are_tables(html, page):
    """A Markdown table that a cell displays is rendered as a table, not as lines of pipes
    (what myst-nb's default CommonMark made of chapter 7's seven sizes)."""
    text = built(html, page).read_text(encoding="utf-8")
    pipes = re.findall(r'<div class="cell_output[^"]*">\s*<p>(\|[^<]{0,60})', text)
    assert not pipes, f"{page}: a displayed table shown as text: {pipes}"


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_the_book_css(html, page):
    """book/_static/book.css (inline code that wraps on a phone, readable captions) reaches
    every page, after the theme's styles so that it wins."""
    text = built(html, page).read_text(encoding="utf-8")
    links = re.findall(r'<link rel="stylesheet"[^>]*href="([^"?]+)', text)
    assert links and links[-1].endswith("_static/book.css"), (
        f"{page}: book.css is not the last stylesheet: {links[-3:]}"
    )
    assert (html / "_static" / "book.css").is_file()


def test_bibliography_labels_match_the_citations(html):
    bibliography = built(html, "book/bibliography").read_text(encoding="utf-8")
    labels = {
        re.sub(r"<[^>]+>", "", label)
        for label in re.findall(r'<span class="label">(.*?)</span>\s*</span>', bibliography)
    }
    labels = {label.strip("[]") for label in labels}
    assert labels, "the bibliography has no labels"
    cited = set()
    for page in PAGES:
        text = built(html, page).read_text(encoding="utf-8")
        for link in re.findall(r'href="[^"]*bibliography\.html#[^"]*"[^>]*>(.*?)</a>', text):
            cited.add(re.sub(r"<[^>]+>", "", link))
    assert cited, "no page cites anything"
    assert cited <= labels, (
        f"citations without a bibliography label of the same text: {sorted(cited - labels)}"
    )
    assert "\\texttt" not in bibliography


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless Chromium")
def test_column_measured_in_chromium(html, tmp_path):
    """The constants above, measured again: characters of the code font that fit in an
    output at a 1366 px wide window, and the widest output column."""
    script = (
        "<script>window.addEventListener('load', () => {"
        "const pre = document.querySelector('div.cell_output pre');"
        "const s = getComputedStyle(pre); const probe = document.createElement('span');"
        "probe.textContent = 'x'.repeat(200); pre.appendChild(probe);"
        "const chars = (pre.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight))"
        " / (probe.getBoundingClientRect().width / 200);"
        "const out = document.querySelector('div.cell_output').clientWidth;"
        "document.body.innerHTML = '<p>MEASURED ' + chars.toFixed(1) + ' ' + out + '</p>';});"
        "</script>"
    )
    page = built(html, "notebooks/00_setup")
    probe = page.with_name("column_probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"))
    measured = {}
    for window in (1366, 1920):
        result = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={window},900",
             "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        found = re.search(r"MEASURED ([\d.]+) (\d+)", result.stdout)
        assert found, f"Chromium measured nothing: {result.stderr[-500:]}"
        measured[window] = (float(found.group(1)), int(found.group(2)))
    assert measured[1366][0] >= COLUMN_CHARS, f"at 1366 px only {measured[1366][0]} characters fit"
    assert measured[1920][1] == COLUMN_PX, f"the widest output column is {measured[1920][1]} px"
