"""XLA's optimisations off for a block of tests, without leaking its programs to later ones."""

import contextlib

import jax

import jcausal.train


@contextlib.contextmanager
def unoptimised():
    """XLA's optimisations off inside, and every program compiled inside forgotten after.

    jax.jit's caches are not keyed on ``jax_disable_most_optimizations``: a function first
    compiled with the flag on keeps its unoptimised program for the rest of the process. A later
    module calling it with the same shapes then runs that program: other floats. This changed
    the policy smoke's front in a CI worker after the CT-VAE experiment test (excess 0.204 at the
    last λ against 0.109 alone); so the caches are cleared on the way out (and in, so that the
    module does compile unoptimised).
    """
    before = jax.config.read("jax_disable_most_optimizations")
    _clear_caches()
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        _clear_caches()


def _clear_caches() -> None:
    jax.clear_caches()
    jcausal.train.cache_clear()  # fit's compiled chunks (jit objects; emptied above, dropped here)
