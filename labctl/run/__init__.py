"""Executing a sealed round: the runner, one run's session, the workspace, grading and pathology flags."""
