"""Helpers for checking projection quality: simulated customers with known fates, AUC."""
