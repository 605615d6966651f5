"""Figures: training curves and label overlays."""
