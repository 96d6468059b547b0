"""The bibliography's labels read like the book's citations: [Hatamizadeh et al., 2024].

sphinxcontrib-bibtex cites in the text as (Author et al., Year) with the ``author_year``
reference style, but its bibliography styles label entries alphabetically ([HHY+24]). This
Sphinx extension registers a pybtex style, ``author_year``, which is pybtex's ``plain``
with labels made the way the citations are: the surname for one author, both for two,
the first and "et al." for more, then the year; entries are sorted the way they are
labelled.
Two works of the same authors and year are told apart in references.bib by a letter after
the year (``year = {2021a}``), which the citations and the labels then both show.

Loaded through ``sphinx.local_extensions`` in _config.yml; selected with
``bibtex_default_style: author_year``.
"""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels ``Surname, Year``, ``Surname and Surname, Year`` or ``Surname et al., Year``."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            if not people:
                names = entry.key
            elif len(people) == 1:
                names = _surname(people[0])
            elif len(people) == 2:
                names = f"{_surname(people[0])} and {_surname(people[1])}"
            else:
                names = f"{_surname(people[0])} et al."
            yield f"{names}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearSortingStyle(BaseSortingStyle):
    """Sorted as the labels read: first author's surname, year (with its letter), title.
    (pybtex's author_year_title compares every author's full name, which puts a 2024 paper
    before a 2023 one of the same first author, and a braced name such as {FAIR} last.)"""

    def sorting_key(self, entry):
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        first = _surname(people[0]).lower() if people else entry.key
        title = entry.fields.get("title", "").replace("{", "").replace("}", "").lower()
        return first, entry.fields.get("year", ""), title


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearSortingStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
