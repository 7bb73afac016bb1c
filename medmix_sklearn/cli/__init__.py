"""The ``medmix`` command: demo, fit, predict, cv, tune and embed from a terminal.

Every subcommand has ``--help``. Errors on bad input print one line naming
the column, row or file at fault and exit with a non-zero code (``--traceback``
shows the full traceback instead).

Modality options, shared by ``fit``, ``cv``, ``tune`` and ``embed``::

    --image [NAME=]COL[:EXPERT,...]   an image column (file paths), e.g.
                                      --image xray=image_path:efficientnet_lite0,efficientnet_lite1
    --text  [NAME=]COL[:EXPERT,...]   a free-text column, e.g. --text report:all-MiniLM-L6-v2
    --tabular [NAME=]COL,COL,...      numeric or categorical columns, e.g. --tabular labs=wbc,crp
    --teacher-image / --teacher-text  the same, for training-only teacher entries
    --config FILE.toml                the same entries (and more) from a TOML file

The package is the console script ``medmix`` and ``python -m medmix_sklearn``.
Nothing in the library imports it. ``_main`` holds the parser and ``main``;
``_entries`` reads tables, options and config files into modality entries;
``_commands`` runs the subcommands and ``_demo`` the demo. It only wires the
library's public names together: evaluation lives in
:mod:`medmix_sklearn.model_selection`.
"""


from ._main import build_parser, main

__all__ = ["build_parser", "main"]
