"""The report on a set of run folders: load.py (reading and grouping), stats.py, plots.py, markdown.py, write.py."""
