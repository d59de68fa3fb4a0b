"""Iterative instance segmentation of vertebrae in CT (Lessmann et al. 2018/2019)."""
