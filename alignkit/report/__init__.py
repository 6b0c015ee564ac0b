"""Run folders to conclusions; nothing here trains. Records and frontiers, verdicts, the compute view, package
versions, plots and the comparison's report files. Docstring only."""
