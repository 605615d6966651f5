"""gliomaseg: post-treatment adult glioma segmentation (BraTS 2024 GLI), end to end."""

__version__ = "0.1.0"
