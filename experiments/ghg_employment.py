"""GHG emissions vs employment: Pareto front of Lie interventions (Lie paper, eq. 5, Fig. 3b-c).

python experiments/ghg_employment.py --smoke
python experiments/ghg_employment.py --region reg3,reg5 --steps 3000
python experiments/ghg_employment.py --exiobase DIR --paper   # the paper's configuration
"""

from jcausal.experiments.ghg_employment import main

if __name__ == "__main__":
    main()
