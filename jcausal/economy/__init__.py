"""Input-output economies as equilibrium SCMs: Leontief quantities, prices, demand, rebound,
and the pymrio / Exiobase adapter.

The public names are re-exported here once the modules land; import from the submodules
(`jcausal.economy.io`, `.leontief`, `.prices`, `.demand`, `.rebound`) in the meantime.
"""
