"""Exiobase archives are checked before pymrio reads them: no code from data files (issue 10 §1)."""

import json
import os
import pickle
import zipfile

import exiobase_like
import pytest

from jcausal import design
from jcausal.economy import io as eio
from jcausal.economy.archive import archive_year, check_archive, find_archives


class _Payload:
    """A pickle that, when loaded, writes a marker file (what a hostile archive would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _params(files):
    return json.dumps(
        {
            "systemtype": "IOSystem",
            "name": "crafted",
            "files": {
                key: {"name": name, "nr_index_col": "2", "nr_header": "2"}
                for key, name in files.items()
            },
        }
    )


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a pickle from the archive was executed"


#: What pymrio reads before the tables (without it, pymrio fails before reaching the pickle).
METADATA = json.dumps(
    {"description": "crafted", "name": "crafted", "system": "pxp", "version": "1", "history": []}
)


def _pickle_zip(tmp_path, marker, sub=""):
    arc = tmp_path / "IOT_2011_pxp.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr(f"{sub}metadata.json", METADATA)
        zf.writestr(f"{sub}file_parameters.json", _params({"A": "A.pkl", "Y": "Y.txt"}))
        zf.writestr(f"{sub}A.pkl", pickle.dumps(_Payload(marker)))
        zf.writestr(f"{sub}Y.txt", "region\tsector\n")
    return arc


@pytest.mark.parametrize("sub", ["", "IOT_2011_pxp/"])
def test_pickle_in_zip_is_refused_and_never_loaded(tmp_path, marker, sub, capsys):
    arc = _pickle_zip(tmp_path, marker, sub)
    with pytest.raises(ValueError, match=r"'A\.pkl': a pickle, which runs code"):
        eio.load_exiobase(arc)
    # The command, even --list, refuses it before any work (exit 2, one line).
    assert design.main(["--exiobase", str(arc), "--list"]) == 2
    assert design.main(["--exiobase", str(arc), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_pickle_in_an_extension_folder_is_refused(tmp_path, marker):
    # pymrio also loads every sub-folder's parameter file (satellite accounts).
    root = tmp_path / "exio"
    (root / "satellite").mkdir(parents=True)
    (root / "metadata.json").write_text(METADATA)
    (root / "file_parameters.json").write_text(_params({"Y": "Y.txt"}))
    (root / "Y.txt").write_text("x\n")
    (root / "satellite" / "file_parameters.json").write_text(_params({"F": "F.pickle"}))
    (root / "satellite" / "F.pickle").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"satellite.*'F\.pickle': a pickle"):
        eio.load_exiobase(root)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "linked_folder"])
def test_tables_outside_the_folder_are_refused(tmp_path, marker, how):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "A.txt").write_text("secret\n")
    root = tmp_path / "exio"
    root.mkdir()
    name = "A.txt"
    if how == "absolute":
        name = str(outside / "A.txt")
    elif how == "dotdot":
        name = "../elsewhere/A.txt"
    elif how == "symlink":
        os.symlink(outside / "A.txt", root / "A.txt")
    if how == "linked_folder":
        (root / "file_parameters.json").write_text(_params({"Y": "Y.txt"}))
        (root / "Y.txt").write_text("x\n")
        (outside / "file_parameters.json").write_text(_params({"F": "A.txt"}))
        os.symlink(outside, root / "satellite")
    else:
        (root / "file_parameters.json").write_text(_params({"A": name}))
    with pytest.raises(ValueError, match=r"absolute path|leaves the archive|outside"):
        check_archive(root)


def test_names_leaving_a_zip_are_refused(tmp_path):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("file_parameters.json", _params({"A": "../A.txt"}))
    with pytest.raises(ValueError, match="leaves the archive"):
        check_archive(arc)


def test_a_safe_archive_passes_the_check_and_pymrio_reads_it(tmp_path):
    # pymrio's own test system saved as text tables: checked, then parsed as before.
    folder = tmp_path / "saved"
    eio.load_test().save_all(folder)
    arc = tmp_path / "saved.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder).as_posix())
    for path in (folder, arc):
        assert check_archive(path) == path
        io = eio.load_exiobase(path)
        assert eio.regions(io) == eio.regions(eio.load_test())


@pytest.mark.parametrize("kind", ["missing", "empty", "random", "unrelated_zip", "empty_folder"])
def test_bad_exiobase_paths_are_named_errors(tmp_path, kind, capsys):
    path = tmp_path / "IOT.zip"
    expected = {
        "missing": "not found",
        "empty": "an empty file",
        "random": "neither a zip archive nor a folder",
        "unrelated_zip": "zip file without input-output tables",
        "empty_folder": "folder without input-output tables",
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "unrelated_zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("README.md", "hello")
    elif kind == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    with pytest.raises(ValueError, match=expected):
        check_archive(path)
    for extra in (["--list"], ["--out", str(tmp_path / "out")]):
        assert design.main(["--exiobase", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# several archives, one per year (issue 12 §3)


def test_find_archives_labels_a_folder_of_archives_by_year(tmp_path):
    for year in (2018, 2012):
        exiobase_like.write_archive(tmp_path, year)
    (tmp_path / "notes.txt").write_text("not an archive")
    found = find_archives(tmp_path)
    assert list(found) == ["2012", "2018"]  # in order of years, the other file ignored
    assert found["2018"] == tmp_path / "IOT_2018_pxp.zip"
    # an archive itself, or several paths, give the same labels
    assert find_archives(found["2012"]) == {"2012": found["2012"]}
    assert find_archives([found["2018"], found["2012"]]) == found
    assert archive_year("IOT_2015_ixi.zip") == "2015" and archive_year("exio.zip") is None
    # the pxp and ixi tables of one year: which one is meant is the user's choice
    (tmp_path / "IOT_2018_ixi.zip").write_bytes(found["2018"].read_bytes())
    with pytest.raises(ValueError, match="two archives for 2018"):
        find_archives(tmp_path)
    (tmp_path / "IOT_2018_ixi.zip").unlink()
    with pytest.raises(ValueError, match="not found"):
        find_archives(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="folder without input-output tables"):
        find_archives(empty)


def test_one_hostile_archive_among_years_stops_the_run(tmp_path, marker, capsys):
    folder = tmp_path / "years"
    folder.mkdir()
    exiobase_like.write_archive(folder, 2018)
    _pickle_zip(folder, marker).rename(folder / "IOT_2011_pxp.zip")
    out = tmp_path / "out"
    assert design.main(["--exiobase", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "IOT_2011_pxp.zip" in err and "Traceback" not in err
    assert not out.exists()
    # choosing the good year by --years runs nothing hostile either (checked: exit 2 on a
    # missing year before any work)
    assert design.main(["--exiobase", str(folder), "--years", "2016", "--list"]) == 2
    assert "no Exiobase archive for 2016" in capsys.readouterr().err
