"""Data layer: DATA strings to samples (sources.py and a reader per format), phantoms, splits, transforms, mixing."""
