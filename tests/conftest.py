"""Test-session settings.

The whole suite runs with 64-bit JAX enabled so closed-form comparisons can be tight; tests
about float32 behaviour create float32 arrays explicitly.
"""

import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

from jcausal.train import unoptimised

jax.config.update("jax_enable_x64", True)

# The command's on-disk compilation cache stays off in tests (no writes to the user's cache
# folder); tests/test_cli_cache.py turns it on in a temporary folder.
os.environ.setdefault("JCAUSAL_COMPILE_CACHE", "0")

# One persistent compilation cache for the whole session, in a temporary folder that the xdist
# workers and every subprocess (notebooks, the command line) inherit through the environment:
# many tests compile programs another test (or worker, or process) already compiled, e.g. a
# fresh `fit` of the same model, and XLA then loads the executable instead of compiling it. The
# key covers the program, the compile options (so optimised and unoptimised builds differ) and
# the backend, so a hit is the same executable. JCAUSAL_TEST_XLA_CACHE=0 turns it off; the
# session that made the folder removes it (`pytest_sessionfinish`).
_OWN_CACHE = False
if os.environ.get("JCAUSAL_TEST_XLA_CACHE", "") != "0":
    if not os.environ.get("JCAUSAL_TEST_XLA_CACHE"):
        os.environ["JCAUSAL_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jcausal-test-xla-")
        _OWN_CACHE = True
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JCAUSAL_TEST_XLA_CACHE"]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JCAUSAL_TEST_XLA_CACHE"], ignore_errors=True)


# Compilation makes the first example of a property slow; deadlines would only measure that.
settings.register_profile(
    "jcausal", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=25
)
settings.load_profile("jcausal")


@pytest.fixture(scope="module")
def fast_compile():
    """XLA's backend optimisations off for one test module (``usefixtures("fast_compile")``).

    For modules whose time is compilation of many programs each run for a few steps (smoke
    experiments, tiny networks): compiling unoptimised costs about half as much while running
    is slower, so it pays only there. Results are the same programs' (no change of dtype or
    algorithm), so the modules' assertions and tolerances are unchanged.
    """
    with unoptimised():
        yield


def _asks_fast_compile(node) -> bool:
    return any("fast_compile" in m.args for m in node.iter_markers("usefixtures"))


@pytest.fixture(scope="module", autouse=True)
def _optimised_module(request):
    """XLA's optimisations on for a module's own fixtures (see :func:`_optimised_test`).

    Unless the module asks for :func:`fast_compile`.
    """
    if not _asks_fast_compile(request.node):
        jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(autouse=True)
def _optimised_test(request):
    """XLA's optimisations on for every test that did not ask for :func:`fast_compile`.

    A guard: module-scoped fixtures flip the flag and restore it at their teardown, and an
    xdist worker that crashes and is replaced, or interleaves modules, could otherwise leave a
    test compiled unoptimised (a different program, slightly different floats) depending on
    which modules ran before it on its worker.
    """
    if "fast_compile" not in request.fixturenames:
        jax.config.update("jax_disable_most_optimizations", False)
