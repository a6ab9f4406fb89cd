"""Pure geometric functions over batched tensors. See :mod:`gangealing.geometry.coords` for the
one coordinate convention used throughout the package."""
