"""Sweeps: a grid of main.py configurations (``grid``) and the executors that run its cells (``executors``)."""
