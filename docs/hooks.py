"""MkDocs hooks that fill pages from the code and from the gallery's measured metrics.

* ``<!-- cli: ARGS -->`` becomes the output of ``jcausal ARGS --help``, read from the parser at
  build time, so the CLI reference cannot go stale; ``<!-- cli-experiments -->`` becomes one
  such section per registered experiment (``jcausal.experiments.available()``).
* Sphinx roles left in docstrings (``:func:`name```) render as plain code, not as the literal
  ``:func:`` text (the docstrings are Google style; a few use the roles inline).
* ``<!-- metric: ENTRY a/b/c -->`` becomes the value at keys ``a``, ``b``, ``c`` of
  ``docs/gallery/ENTRY/metrics.json`` (written by ``docs/gallery.py``), formatted to 3
  significant digits; a missing file or key fails the build.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

MARKER = re.compile(r"<!-- cli:(.*?)-->")
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):(<code>)")
METRIC = re.compile(r"<!-- metric: *(\S+) +(\S+) *-->")
GALLERY = Path(__file__).resolve().parent / "gallery"


def _metric(entry: str, key: str) -> str:
    path = GALLERY / entry / "metrics.json"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run python docs/gallery.py {entry}")
    value = json.loads(path.read_text())
    for part in key.split("/"):
        if isinstance(value, list):
            part = int(part)
        elif part not in value:
            raise KeyError(f"{path} has no {key!r} (at {part!r})")
        value = value[part]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _help(args: list[str]) -> str:
    from jcausal.cli import main

    os.environ["COLUMNS"] = "100"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main([*args, "--help"])
    text = buf.getvalue().rstrip()
    if not text:
        raise RuntimeError(f"`jcausal {' '.join(args)} --help` printed nothing")
    return text


def _experiments() -> str:
    from jcausal.experiments import available

    return "\n\n".join(f"### {name}\n\n<!-- cli: experiment {name} -->" for name in available())


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace every metric marker with its value and every CLI marker with the help."""
    if "<!-- cli-experiments -->" in markdown:
        markdown = markdown.replace("<!-- cli-experiments -->", _experiments())

    def block(m: re.Match) -> str:
        args = m.group(1).split()
        title = " ".join(["jcausal", *args, "--help"])
        return f"```text\n$ {title}\n{_help(args)}\n```"

    markdown = METRIC.sub(lambda m: _metric(m.group(1), m.group(2)), markdown)
    return MARKER.sub(block, markdown)


def on_page_content(html: str, page, config, files) -> str:
    """Drop Sphinx role prefixes (``:func:``) in front of inline code in rendered docstrings."""
    return ROLE.sub(r"\1", html)
