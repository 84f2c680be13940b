"""Run the `deepscm` experiment (`--smoke` for the fast config; `--out DIR`, `--seed N`)."""

from jcausal.experiments.deepscm import main

if __name__ == "__main__":
    main()
