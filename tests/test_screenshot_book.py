"""scripts/screenshot_book.py: screenshots of a built book and the pages that scroll sideways,
checked on a tiny hand-written "book" (needs headless Chromium; skipped without it)."""

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("screenshot_book", ROOT / "scripts" / "screenshot_book.py")
screenshot_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(screenshot_book)

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless Chromium")

PAGE = (
    '<!doctype html><html><head><meta name="viewport" content="width=device-width, '
    'initial-scale=1"></head><body style="margin:0"><article>{}</article></body></html>'
)


@pytest.fixture
def book(tmp_path) -> Path:
    """book/narrow fits any screen; book/wide holds a 600 px block, wider than a phone;
    book/remote asks for an image from another host; notebooks/code has a code block that
    scrolls inside itself (allowed: the page does not scroll)."""
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / "notebooks").mkdir()
    (html / "index.html").write_text(PAGE.format("index"))
    (html / "book" / "narrow.html").write_text(PAGE.format("<p>short text</p>"))
    (html / "book" / "wide.html").write_text(PAGE.format('<div style="width:600px">wide</div>'))
    (html / "book" / "remote.html").write_text(PAGE.format('<img src="http://example.org/a.png">'))
    code = '<pre style="overflow-x:auto;max-width:100%">' + "x" * 200 + "</pre>"
    (html / "notebooks" / "code.html").write_text(PAGE.format(code))
    return html


def run(book: Path, out: Path, capsys, *args: str) -> tuple[int, list[dict]]:
    status = screenshot_book.main([str(book), str(out), *args])
    return status, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_reports_pages_wider_than_the_window(book, tmp_path, capsys):
    status, records = run(book, tmp_path / "shots", capsys, "--widths", "1366", "390",
                          "--pages", "book/narrow", "book/wide", "notebooks/code")  # fmt: skip
    summary = records[-1]
    assert status == 1
    # 600 px fit a desktop window but not a phone's 390 px
    assert summary["scrolls_sideways"] == ["book/wide at 390 px (600 px wide)"]
    code = next(r for r in records[:-1] if r["page"] == "notebooks/code" and r["width"] == 1366)
    assert len(code["scrolling_code"]) == 1, "the 200-character line scrolls inside its block"
    assert summary["remote_requests"] == []


def test_writes_tiles_of_the_whole_page(book, tmp_path, capsys):
    (book / "book" / "tall.html").write_text(PAGE.format('<div style="height:2500px">tall</div>'))
    status, records = run(book, tmp_path / "shots", capsys, "--widths", "390", "--tile", "1000",
                          "--pages", "book/tall")  # fmt: skip
    assert status == 0
    tiles = sorted((tmp_path / "shots" / "390").glob("book__tall-*.png"))
    assert [t.name for t in tiles] == ["book__tall-00.png", "book__tall-01.png", "book__tall-02.png"]
    # a phone is drawn at twice the CSS pixels: 390 x 1000 CSS px per tile
    width, height = struct.unpack(">II", tiles[0].read_bytes()[16:24])
    assert (width, height) == (780, 2000)


def test_reports_remote_requests(book, tmp_path, capsys):
    status, records = run(book, tmp_path / "shots", capsys, "--widths", "1366", "--pages", "book/remote")
    assert status == 1
    assert records[-1]["remote_requests"] == ["http://example.org/a.png"]


def test_refuses_a_folder_without_a_built_book(tmp_path):
    with pytest.raises(SystemExit):
        screenshot_book.main([str(tmp_path), str(tmp_path / "shots")])
