"""Data that is not a single case: synthetic cases, patient-wise splits."""
