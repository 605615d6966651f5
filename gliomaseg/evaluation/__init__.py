"""BraTS 2024 GLI lesion-wise evaluation."""
