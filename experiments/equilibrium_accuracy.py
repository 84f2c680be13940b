"""Run the `equilibrium_accuracy` experiment (`--smoke`: fast config; `--out DIR`, `--seed N`)."""

from jcausal.experiments.equilibrium_accuracy import main

if __name__ == "__main__":
    main()
