"""One run: a recipe becomes a finished run folder (the pipeline), the decision of what to do with an existing
folder, the trajectory recorded while training, re-evaluation of a finished run, and its Hub card and push.
Docstring only."""
