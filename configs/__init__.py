"""Experiment configs (``--config=configs/x.py[:variant]``); `configs.common` holds what they share."""
