"""Run the `equilibrium_accuracy` experiment (Fig. 3a, ours vs the authors' solver protocol).

Options: `--smoke` (fast config), `--exiobase PATH` (an Exiobase 3 pxp archive; repeat for
several years), `--out DIR`, `--seed N`.
"""

from jcausal.experiments.equilibrium_accuracy import main

if __name__ == "__main__":
    main()
