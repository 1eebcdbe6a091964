"""The machines of a run: which scheduler started the process, joining a multi-process
job, the process and device flags."""
