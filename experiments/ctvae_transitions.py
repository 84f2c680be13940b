"""Run the `ctvae` experiment: CT-VAE on procedural one-factor transitions (Table 1, Figs. 5-6).

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--size S`, `--steps N`.
"""

from jcausal.experiments.ctvae import main

if __name__ == "__main__":
    main()
