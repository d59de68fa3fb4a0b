"""Intervertebral disc labelling in MRI (stacked hourglass with multi-level attention, Azad et al. 2021)."""
