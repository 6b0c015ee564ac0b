"""Many runs: ``alignkit compare``. The plan (entries, sweeps, seeds, fairness), phase 1 (shared stages built
once), phase 2 (one worker per entry, here, in local processes or on Ray), replicates and until-converged
rounds.
Docstring only: a worker or Ray task imports just the module it needs."""
