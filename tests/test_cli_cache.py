"""The command's persistent compilation cache and its cold start."""

import os
import subprocess
import sys

from jcausal import cli


def _run(args, env_extra, cwd):
    env = dict(os.environ)
    env.pop("JCAUSAL_COMPILE_CACHE", None)
    # Every program is worth caching here, however short its compilation.
    env |= {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "jcausal.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cache_folder_from_the_environment(tmp_path):
    assert cli.compile_cache_dir({"JCAUSAL_COMPILE_CACHE": "off"}) is None
    assert cli.compile_cache_dir({"JCAUSAL_COMPILE_CACHE": "0"}) is None
    assert cli.compile_cache_dir({"JCAUSAL_COMPILE_CACHE": str(tmp_path)}) == str(tmp_path)
    assert cli.compile_cache_dir({"XDG_CACHE_HOME": "/c"}) == os.path.join("/c", "jcausal", "xla")


def test_demo_fills_the_cache_and_the_flag_turns_it_off(tmp_path):
    cache = tmp_path / "cache"
    res = _run(["demo", "--n", "2"], {"JCAUSAL_COMPILE_CACHE": str(cache)}, tmp_path)
    assert res.returncode == 0, res.stderr
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "no compiled program was written to the cache"
    # A second run reads them: same answer, no new entries for the same programs.
    again = _run(["demo", "--n", "2"], {"JCAUSAL_COMPILE_CACHE": str(cache)}, tmp_path)
    assert again.returncode == 0 and again.stdout == res.stdout
    off = tmp_path / "off"
    res = _run(["--no-compile-cache", "demo", "--n", "2"], {"JCAUSAL_COMPILE_CACHE": str(off)},
               tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not off.exists()


def test_unwritable_cache_folder_is_named_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = _run(["demo", "--n", "2"], {"JCAUSAL_COMPILE_CACHE": str(blocker / "xla")}, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "compilation cache off" in res.stderr and str(blocker) in res.stderr


def test_import_and_help_do_not_import_jax(tmp_path):
    code = "import sys, jcausal; print('jax' in sys.modules, 'distrax' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]
    code = (
        "import sys; from jcausal import cli; sys.argv=['jcausal','--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('jax' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().endswith("False")
