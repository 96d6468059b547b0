"""Turn every "chapter N" in the book's prose into a link to chapter N.

Usage: python scripts/link_chapters.py [--check] [FILE ...]
       (default: every notebooks/*.ipynb and book/*.md)

The rule, in the markdown cells of notebooks and in the book's markdown pages:

* "chapter N" and "Chapter N" become ``[chapter N](NN_topic.ipynb)``, with the path
  relative to the page; in "chapters 5 and 6" (also "5, 6 and 7", "4 to 6", "5 or 6")
  each number becomes a link: ``chapters [5](05_...ipynb) and [6](06_...ipynb)``.
* Left alone: code (fenced blocks, inline code), math, headings, the text of existing
  links and roles such as {doc}, a chapter's references to itself, and numbers that are
  no chapter (the script names them and exits 1).
* Hint and note blocks (MyST directives such as ```{admonition}``` or :::{note}) hold
  prose, so their contents are linked.

Running it twice changes nothing the second time. With --check it only reports the files
it would change (exit 1 if any).
"""

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAGES = ROOT / "book"

# Spans whose text is never touched, tried before a chapter reference at each position:
# a link's text and target, a role with its argument, inline code, inline and display math.
PROTECTED = (
    r"\[[^\]]*\]\([^)]*\)"  # [text](target)
    r"|\{[\w:-]+\}`[^`]*`"  # {role}`...`
    r"|`[^`]*`"  # inline code
    r"|\$\$.*?\$\$|\$[^$]*\$"  # math
    r"|<[^>\s]+>"  # autolinks, HTML tags
)
NUMBER_LIST = r"\d{1,2}(?:(?:,\s+|,?\s+and\s+|\s+to\s+|\s+or\s+)\d{1,2})*"
REFERENCE = re.compile(
    rf"(?P<protected>{PROTECTED})"
    rf"|\b(?P<plural>[Cc]hapters)(?P<space>\s+)(?P<numbers>{NUMBER_LIST})\b"
    r"|\b(?P<singular>[Cc]hapter\s+(?P<number>\d{1,2}))\b",
    re.DOTALL,
)
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(\S*)")
# Directives whose body is prose (the rest, e.g. code-cell or math, are left alone).
PROSE_DIRECTIVES = re.compile(
    r"\{(admonition|note|tip|hint|warning|important|caution|attention|danger|error|seealso|figure|"
    r"dropdown|margin|sidebar|topic|epigraph)\}"
)


def chapters() -> dict[int, Path]:
    """``{N: path}`` for every notebook ``notebooks/NN_topic.ipynb``."""
    return {int(path.name[:2]): path for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


class UnknownChapter(ValueError):
    """A reference to a chapter number that has no notebook."""


def link_text(text: str, page: Path, known: dict[int, Path]) -> str:
    """``text`` (markdown) with every chapter reference of its prose made a link.

    Args:
        text: markdown source.
        page: the file the text belongs to (targets are relative to its folder; a chapter
            never links to itself).
        known: ``{N: notebook path}``.

    Raises:
        UnknownChapter: a reference names a number that has no notebook.
    """

    def target(number: int) -> str | None:
        if number not in known:
            raise UnknownChapter(f"{page.name}: 'chapter {number}' names no notebook in notebooks/")
        path = known[number]
        if path.resolve() == page.resolve():
            return None
        return Path(os.path.relpath(path.resolve(), page.parent.resolve())).as_posix()

    def replace(match: re.Match) -> str:
        if match.group("protected"):
            return match.group(0)
        if match.group("singular"):
            where = target(int(match.group("number")))
            return match.group(0) if where is None else f"[{match.group(0)}]({where})"

        def one(number: re.Match) -> str:
            where = target(int(number.group(0)))
            return number.group(0) if where is None else f"[{number.group(0)}]({where})"

        numbers = re.sub(r"\d{1,2}", one, match.group("numbers"))
        return f"{match.group('plural')}{match.group('space')}{numbers}"

    out, prose = [], []

    def flush() -> None:
        if prose:
            out.append(REFERENCE.sub(replace, "".join(prose)))
            prose.clear()

    code: str | None = None  # the marker that opened the code block we are in
    directives: list[str] = []  # markers of the prose directives we are in
    for line in text.splitlines(keepends=True):
        fence = FENCE.match(line)
        if code is not None:
            out.append(line)
            if fence and fence.group(1) == code and not fence.group(2):
                code = None
            continue
        if fence:
            flush()
            out.append(line)
            marker, info = fence.groups()
            if not info and directives and directives[-1] == marker:
                directives.pop()
            elif marker[0] == ":" or PROSE_DIRECTIVES.match(info):
                directives.append(marker)
            else:
                code = marker
            continue
        if line.lstrip().startswith("#") or re.match(r"^\s*:[\w-]+:", line):
            # a heading, or a directive's option
            flush()
            out.append(line)
            continue
        prose.append(line)
    flush()
    return "".join(out)


def link_file(path: Path, known: dict[int, Path]) -> bool:
    """Link the chapter references of one notebook (markdown cells) or markdown page in
    place; return whether it changed."""
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        changed = False
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                linked = link_text(cell.source, path, known)
                changed |= linked != cell.source
                cell.source = linked
        if changed:
            nbformat.write(nb, path)
        return changed
    text = path.read_text(encoding="utf-8")
    linked = link_text(text, path, known)
    if linked != text:
        path.write_text(linked, encoding="utf-8")
    return linked != text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: notebooks/*.ipynb and book/*.md")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = parser.parse_args()
    paths = args.files or sorted(NOTEBOOKS.glob("*.ipynb")) + sorted(PAGES.glob("*.md"))
    known = chapters()
    changed = []
    try:
        for path in paths:
            if args.check:
                before = path.read_text(encoding="utf-8")
                if link_file(path, known):
                    changed.append(path)
                    path.write_text(before, encoding="utf-8")
            elif link_file(path, known):
                changed.append(path)
    except UnknownChapter as error:
        sys.exit(str(error))
    for path in changed:
        print(f"{'would link' if args.check else 'linked'}: {path}")
    if args.check and changed:
        sys.exit(1)


if __name__ == "__main__":
    main()
