"""The command line, one module per command (``python -m fastervit --help`` lists them).

The top layer of the package: commands turn flags into the library's dataclasses and
functions, and nothing below imports them. :mod:`~fastervit.commands.cli` dispatches;
:mod:`~fastervit.commands.common` holds the flag types, ``--resolution`` and the JSON record.
"""
