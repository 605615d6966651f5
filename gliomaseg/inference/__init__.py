"""Prediction on new scans."""
