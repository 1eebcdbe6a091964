"""The one-run privacy audit (Steinke, Nasr & Jagielski 2023).

statistics.py: the test (membership draws, guesses, the epsilon lower bound);
canaries.py: the canaries and the audited training split; scoring.py: membership
scores from the trained model; hook.py: the audit wired into a run (audit.json).
"""
