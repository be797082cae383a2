"""Data layer: phantoms, readers, splits, transforms, mixing."""
