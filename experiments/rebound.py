"""Run the `rebound` experiment (`--smoke` for the fast config; `--out DIR`, `--seed N`)."""

from jcausal.experiments.rebound import main

if __name__ == "__main__":
    main()
