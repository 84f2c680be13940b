"""Run the `modularity` experiment: hybrids, influence maps and NMF modules of a Deep SCM decoder.

`--smoke` for the fast config; `--out DIR`, `--seed N`, `--steps N` (Deep SCM training steps),
`--parts digits,vae,mcqvae` (the Deep SCM on Morpho-MNIST, a small VAE and the CT-VAE's
MCQ-VAE on the procedural scenes: object vs background influence; all three by default).
"""

from jcausal.experiments.modularity import main

if __name__ == "__main__":
    main()
