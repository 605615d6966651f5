"""Tumour measurements from label maps: volumes, RANO-style bidimensional products, change over time."""
