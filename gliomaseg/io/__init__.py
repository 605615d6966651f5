"""Reading and writing NIfTI volumes and BraTS case folders."""
