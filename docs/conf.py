"""Sphinx configuration: the user guide (Markdown, MyST) and the API reference from
the numpydoc docstrings (autodoc + napoleon). ``make docs`` builds it with warnings
as errors."""

import os
import sys

sys.path.insert(0, os.path.abspath("../python"))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from cellsynth import __version__  # noqa: E402

project = "cellsynth"
author = "cellsynth developers"
release = version = __version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
myst_heading_anchors = 3
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
