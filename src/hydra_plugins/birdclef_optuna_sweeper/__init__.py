"""A Hydra sweeper over modern Optuna (>= 3): hydra/sweeper=birdclef_optuna.

Written because the official hydra-optuna-sweeper 1.3.0 pins optuna<3, whose SQLite storage breaks
under SQLAlchemy 2. Hydra finds it by scanning the `hydra_plugins` namespace package (docs/sweeps.md).
"""
