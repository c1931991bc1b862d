"""Sphinx configuration of the geofuse documentation site.

Build it with ``python -m sphinx -W -n docs OUT`` (warnings are errors, every reference must
resolve). Pages are Markdown (myst-parser); the CLI reference is generated from the click group
(sphinx-click) and the Python API from the docstrings (autodoc + napoleon, Google style).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's geofuse, also when another one is installed

import geofuse  # noqa: E402

project = "geofuse"
copyright = "the geofuse authors; Apache-2.0"  # noqa: A001
release = geofuse.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"geofuse {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # dataclass fields once, in the class, not again as attributes

# Types from outside geofuse (the standard library, numpy, Keras, rasterio, Dask...) have no
# page on this site; with -n every other reference must resolve.
nitpick_ignore_regex = [
    (r"py:class", r"(pathlib\.)?Path|numpy\.ndarray|np\.ndarray|collections\.abc\..*|typing\..*"),
    (r"py:(class|exc)", r"(keras|rasterio|distributed|concurrent|affine|shapely|click)\..*"),
    (r"py:(class|exc)", r"(datetime|pystac|sqlite3|json|os|logging)\..*"),
    (r"py:func", r"dataclasses\..*"),
    # a TypeVar, and private helpers that appear in signatures
    (r"py:class", r"geofuse\.read\.feed\.T|.*\._[A-Za-z]\w*"),
]
