"""Baselines to compare GANgealing against."""
