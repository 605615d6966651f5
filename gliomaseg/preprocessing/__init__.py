"""The baseline recipe's preprocessing: brain crop, resize, intensity normalisation, cache."""
