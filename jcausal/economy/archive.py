"""Checks of an input-output archive before pymrio reads it: no code from data files.

pymrio's loader (``pymrio.load_all``, behind ``pymrio.parse_exiobase3``) reads the
``file_parameters.json`` of the archive (a zip file or a folder) and of each of its
sub-folders, then reads every table listed there with a reader chosen by the file name's
suffix: ``.pkl`` / ``.pickle`` with ``pandas.read_pickle``, which **executes** code stored in the
file. In a folder, a table name is joined to the folder with ``pathlib``, so an absolute name or
``..`` (or a symbolic link) reads a file anywhere on the machine. An archive from the internet is
untrusted data, so :func:`check_archive` reads the same parameter files first (with ``json``
only) and refuses:

* a table stored as a pickle (any suffix other than pymrio's text or parquet suffixes),
* a table name that is absolute, contains ``..`` or resolves (through links) outside the
  archive or folder, or a parameter file that does,
* a listed table that does not exist, and a parameter file that is not the JSON pymrio writes;

and names what it found in a :class:`ValueError`. It also turns an empty file, random bytes, an
unrelated zip and a folder without tables into named errors.

Parquet tables are read by pyarrow, which had one code-execution hole (CVE-2023-47248, its
``PyExtensionType``), closed since pyarrow 14.0.1; :func:`check_archive` refuses parquet tables
when an older pyarrow is installed.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

#: pymrio's name of the file that lists the tables of a system or extension.
PARAMETER_FILE = "file_parameters.json"
#: suffixes pymrio reads without executing code (``STORAGE_FORMAT`` minus the pickle formats).
TEXT_SUFFIXES = ("txt", "tsv", "csv")
PARQUET_SUFFIXES = ("parquet", "par", "parq")


def _suffix(name: str) -> str:
    # The exact rule of pymrio.core.fileio._get_file_format.
    return PurePosixPath(name).suffix.lstrip(".").lower()


def _parquet_is_safe() -> bool:
    try:
        import pyarrow
    except ImportError:  # pandas cannot read parquet then; pymrio will say so
        return True
    parts = []
    for p in pyarrow.__version__.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= (14, 0, 1)


def _tables(where: str, text: str | bytes) -> list[str]:
    """The table names of one parameter file (``where`` names it in errors)."""
    try:
        content = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where} is not valid JSON ({err}); the archive is damaged") from None
    files = content.get("files") if isinstance(content, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("name"), str) for v in files.values()
    ):
        raise ValueError(
            f"{where} does not list tables as pymrio writes them "
            '({"systemtype": ..., "files": {"A": {"name": "A.txt", ...}}}); '
            "the archive is damaged or was not written by pymrio"
        )
    return [v["name"] for v in files.values()]


def _check_name(where: str, name: str) -> None:
    """Refuse a table name that leaves its folder or is not a text / parquet table."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(
            f"{where} names the table {name!r}, an absolute path: tables must lie inside the "
            "archive; refusing to read it (the archive may be crafted)"
        )
    if ".." in parts:
        raise ValueError(
            f"{where} names the table {name!r}, which leaves the archive ('..'); refusing to "
            "read it (the archive may be crafted)"
        )
    fmt = _suffix(name)
    if fmt in TEXT_SUFFIXES:
        return
    if fmt in PARQUET_SUFFIXES:
        if _parquet_is_safe():
            return
        raise ValueError(
            f"{where} lists the parquet table {name!r}, and the installed pyarrow is older than "
            "14.0.1 (CVE-2023-47248: reading parquet can run code); upgrade pyarrow"
        )
    kind = "a pickle, which runs code when read" if fmt in ("pkl", "pickle") else "not a table"
    raise ValueError(
        f"{where} lists the table {name!r}: {kind}. Only text ({', '.join(TEXT_SUFFIXES)}) and "
        f"parquet tables are read; refusing this archive (convert trusted pickles with pymrio's "
        "save_all(format='txt'))"
    )


def _check_zip(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        members = set(zf.namelist())
        params = sorted(m for m in members if PurePosixPath(m).name == PARAMETER_FILE)
        if not params:
            raise ValueError(
                f"{str(path)!r} is a zip file without input-output tables (no {PARAMETER_FILE}); "
                "pass an Exiobase 3 archive as downloaded (e.g. IOT_2011_pxp.zip)"
            )
        for member in params:
            where = f"{path.name}:{member}"
            folder = PurePosixPath(member).parent
            for name in _tables(where, zf.read(member)):
                _check_name(where, name)
                full = str(folder / name) if str(folder) != "." else name
                if full not in members:
                    raise ValueError(f"{where} lists the table {name!r}, absent from the archive")


def _inside(root: Path, p: Path) -> bool:
    return p == root or root in p.parents


def _check_folder(path: Path) -> None:
    root = path.resolve()
    # What pymrio.load_all reads: the folder's parameter file and that of every sub-folder
    # (``is_dir`` follows links, so a linked sub-folder is read too).
    candidates = [path, *sorted(d for d in path.iterdir() if d.is_dir())]
    params = [d / PARAMETER_FILE for d in candidates if (d / PARAMETER_FILE).exists()]
    if not (path / PARAMETER_FILE).exists():
        raise ValueError(
            f"{str(path)!r} is a folder without input-output tables (no {PARAMETER_FILE}); pass "
            "an Exiobase 3 archive (zip) or the folder it unpacks to"
        )
    for param in params:
        where = str(param)
        if not _inside(root, param.resolve()):
            raise ValueError(
                f"{where} resolves to {str(param.resolve())!r}, outside {str(path)!r} (a link); "
                "refusing to read it"
            )
        for name in _tables(where, param.read_bytes()):
            _check_name(where, name)
            target = param.parent / name
            if not _inside(root, target.resolve()):
                raise ValueError(
                    f"{where} lists the table {name!r}, which resolves to "
                    f"{str(target.resolve())!r}, outside {str(path)!r} (a link); refusing to "
                    "read it"
                )
            if not target.is_file():
                raise ValueError(f"{where} lists the table {name!r}, absent from {str(path)!r}")


def check_archive(path: str | Path) -> Path:
    """Check that pymrio can read ``path`` without running code or leaving the archive.

    Args:
        path: an Exiobase 3 / pymrio archive: a zip file or the folder it unpacks to.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` does not exist, is not a zip file or a folder, holds no tables, or
            lists a table that is a pickle, lies outside it, or is absent (see the module
            docstring); the message names the file and the table.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(
            f"Exiobase archive {str(path)!r} not found; download one (e.g. with "
            "pymrio.download_exiobase3) and pass its path"
        )
    if path.is_dir():
        _check_folder(path)
    elif zipfile.is_zipfile(path):
        try:
            _check_zip(path)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{str(path)!r} is a damaged zip file ({err})") from None
    else:
        size = path.stat().st_size if path.is_file() else 0
        what = "an empty file" if size == 0 else "neither a zip archive nor a folder"
        raise ValueError(
            f"{str(path)!r} is {what}; pass an Exiobase 3 archive (e.g. IOT_2011_pxp.zip) or "
            "the folder it unpacks to"
        )
    return path


_YEAR = re.compile(r"(?<!\d)((?:19|20)\d\d)(?!\d)")


def archive_year(path: str | Path) -> str | None:
    """The year in an archive's name (``IOT_2018_pxp.zip`` -> ``"2018"``), or ``None``."""
    years = _YEAR.findall(Path(path).name)
    return years[0] if len(years) == 1 else None


def _is_archive(path: Path) -> bool:
    return (path.is_dir() and (path / PARAMETER_FILE).exists()) or (
        path.is_file() and zipfile.is_zipfile(path)
    )


def find_archives(paths: str | Path | Sequence[str | Path]) -> dict[str, Path]:
    """Archives named by the user, labelled by year: one archive, or a folder of archives.

    Each path is an archive (a zip file, or a folder holding pymrio's ``file_parameters.json``)
    or a folder of archives (e.g. ``IOT_2012_pxp.zip`` ... ``IOT_2018_pxp.zip``, as
    ``pymrio.download_exiobase3`` stores them). An archive is labelled by the year in its name,
    else by its name. The archives are not opened (see :func:`check_archive`).

    Args:
        paths: one path or several.

    Returns:
        ``{label: path}``, sorted by label (years in order).

    Raises:
        ValueError: a missing path, a folder without archives, or two archives with the same
            label (e.g. the pxp and ixi tables of one year: pass one of them).
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError("no Exiobase archive given; pass an archive or a folder of archives")
    found: dict[str, Path] = {}
    for item in items:
        path = Path(item)
        if not path.exists():
            raise ValueError(
                f"Exiobase archive {str(path)!r} not found; download one (e.g. with "
                "pymrio.download_exiobase3) and pass its path"
            )
        if _is_archive(path) or not path.is_dir():
            members = [path]  # not an archive at all: check_archive names the problem
        else:
            members = sorted(p for p in path.iterdir() if _is_archive(p))
            if not members:
                raise ValueError(
                    f"{str(path)!r} is a folder without input-output tables: it holds neither "
                    f"{PARAMETER_FILE} nor archives (e.g. IOT_2018_pxp.zip); pass an Exiobase 3 "
                    "archive or the folder holding them"
                )
        for member in members:
            label = archive_year(member) or member.name
            if label in found and found[label] != member:
                raise ValueError(
                    f"two archives for {label}: {str(found[label])!r} and {str(member)!r}; "
                    "pass one of them (e.g. only the pxp tables)"
                )
            found[label] = member
    return dict(sorted(found.items()))


__all__ = ["PARAMETER_FILE", "archive_year", "check_archive", "find_archives"]
