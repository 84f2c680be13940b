"""Differentiable policy search: amortised GHG–employment front and personalised doses.

python experiments/policy_search.py --smoke
python experiments/policy_search.py            # the full configuration
"""

from jcausal.experiments.policy import main

if __name__ == "__main__":
    main()
