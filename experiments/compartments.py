"""Run the `compartments` experiment (`--smoke` for the fast config; `--out DIR`, `--seed N`)."""

from jcausal.experiments.compartments import main

if __name__ == "__main__":
    main()
