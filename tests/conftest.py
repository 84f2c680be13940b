"""Test-session settings.

The whole suite runs with 64-bit JAX enabled so closed-form comparisons can be tight; tests
about float32 behaviour create float32 arrays explicitly.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings
from xla_flags import unoptimised

jax.config.update("jax_enable_x64", True)

# The command's on-disk compilation cache stays off in tests (no writes to the user's cache
# folder); tests/test_cli_cache.py turns it on in a temporary folder.
os.environ.setdefault("JCAUSAL_COMPILE_CACHE", "0")

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
