"""scripts/link_chapters.py: the rule that makes every "chapter N" of the prose a link."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("link_chapters", ROOT / "scripts" / "link_chapters.py")
link_chapters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(link_chapters)


@pytest.fixture
def book(tmp_path) -> dict[int, Path]:
    """A book of four chapters in tmp_path/notebooks and a page folder tmp_path/book."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    names = {1: "01_why.ipynb", 4: "04_windows.ipynb", 5: "05_carriers.ipynb", 6: "06_hat.ipynb"}
    return {n: tmp_path / "notebooks" / name for n, name in names.items()}


def link(text: str, page: Path, known: dict[int, Path]) -> str:
    return link_chapters.link_text(text, page, known)


def test_singular_reference_becomes_a_link(book):
    page = book[1]
    assert link("as chapter 4 shows", page, book) == "as [chapter 4](04_windows.ipynb) shows"
    assert link("Chapter 5 pools.", page, book) == "[Chapter 5](05_carriers.ipynb) pools."


def test_reference_across_a_line_break(book):
    assert link("see chapter\n4 for it", book[1], book) == "see [chapter\n4](04_windows.ipynb) for it"


def test_pages_outside_notebooks_link_upwards(book, tmp_path):
    page = tmp_path / "book" / "intro.md"
    assert link("chapter 6", page, book) == "[chapter 6](../notebooks/06_hat.ipynb)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chapters 5 and 6", "chapters [5](05_carriers.ipynb) and [6](06_hat.ipynb)"),
        ("chapters 4 to 6", "chapters [4](04_windows.ipynb) to [6](06_hat.ipynb)"),
        (
            "chapters 4, 5 and 6",
            "chapters [4](04_windows.ipynb), [5](05_carriers.ipynb) and [6](06_hat.ipynb)",
        ),
        ("Chapters 5 or 6", "Chapters [5](05_carriers.ipynb) or [6](06_hat.ipynb)"),
    ],
)
def test_each_number_of_a_plural_reference_is_linked(book, text, expected):
    assert link(text, book[1], book) == expected


@pytest.mark.parametrize(
    "text",
    [
        "```python\n# chapter 4\n```\n",  # fenced code
        "~~~\nchapter 4\n~~~\n",
        "call `chapter 4` here\n",  # inline code
        "## Chapter 4 in brief\n",  # heading
        "as [chapter 4](04_windows.ipynb) shows\n",  # already a link
        "as [the window chapter 4 text](elsewhere.md) shows\n",  # inside another link's text
        "{doc}`chapter 4 <04_windows>`\n",  # a role
        "$\\text{chapter 4}$\n",  # math
        "in this chapter, as chapter 1 says\n",  # a chapter's reference to itself (page is 01)
    ],
)
def test_code_headings_links_math_and_self_references_are_left_alone(book, text):
    assert link(text, book[1], book) == text


def test_hint_blocks_are_prose_and_their_fences_do_not_start_code(book):
    text = (
        "```{admonition} Hint\n:class: dropdown\nRead chapter 4.\n```\n\n"
        "Then chapter 5.\n\n```python\nchapter 6\n```\n"
    )
    assert link(text, book[1], book) == (
        "```{admonition} Hint\n:class: dropdown\nRead [chapter 4](04_windows.ipynb).\n```\n\n"
        "Then [chapter 5](05_carriers.ipynb).\n\n```python\nchapter 6\n```\n"
    )
    colon = ":::{note}\nchapter 6\n:::\n"
    assert link(colon, book[1], book) == ":::{note}\n[chapter 6](06_hat.ipynb)\n:::\n"


def test_linking_twice_changes_nothing_more(book):
    text = "Chapter 4, then chapters 5 and 6; `chapter 4`.\n"
    once = link(text, book[1], book)
    assert once != text
    assert link(once, book[1], book) == once


def test_unknown_chapter_is_an_error(book):
    with pytest.raises(link_chapters.UnknownChapter, match="chapter 9"):
        link("see chapter 9", book[1], book)


def test_notebook_markdown_cells_only(book):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("Chapter 4 builds it."),
        nbformat.v4.new_code_cell("x = 1  # chapter 4"),
    ]
    nbformat.write(nb, book[5])
    assert link_chapters.link_file(book[5], book)
    cells = nbformat.read(book[5], as_version=4).cells
    assert cells[0].source == "[Chapter 4](04_windows.ipynb) builds it."
    assert cells[1].source == "x = 1  # chapter 4"
    assert not link_chapters.link_file(book[5], book), "a second run changed the notebook again"


def test_every_chapter_number_is_a_notebook():
    known = link_chapters.chapters()
    assert known, "no notebooks/NN_topic.ipynb found"
    assert all(path.name.startswith(f"{n:02d}_") for n, path in known.items())
