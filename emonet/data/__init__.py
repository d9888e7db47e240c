"""Datasets in their real on-disk formats (EMOTIC, AffectNet, Emodataset, CSV of faces).

Kept import-free on purpose: ``import emonet.data.emotic`` (etc.) loads only what that dataset needs.
"""
