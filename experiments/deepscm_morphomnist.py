"""Run the `deepscm` experiment: Deep SCM on Morpho-MNIST (Table 1, Figs. 3, 4, A.6).

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--kinds`, `--steps`, `--condition`.
"""

from jcausal.experiments.deepscm import main

if __name__ == "__main__":
    main()
