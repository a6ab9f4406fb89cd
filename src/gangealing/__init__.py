"""gangealing: GAN-Supervised Dense Visual Alignment in pure PyTorch."""

__version__ = "0.1.0"
