"""Run the `modularity` experiment: hybrids, influence maps and NMF modules of a Deep SCM decoder.

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--steps N` (Deep SCM training steps),
`--scenes` (also a small VAE on the procedural scenes: object vs background influence).
"""

from jcausal.experiments.modularity import main

if __name__ == "__main__":
    main()
