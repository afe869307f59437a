"""Folding a graph's channel groups: per-channel features, clustering (k-means, or Ward where
k-means gets expensive), the per-group plan (k, recipe, overrides), the rewrite of every member
tensor, verification with rollback, and the magnitude-pruning baseline that shares the rewrite.
"""
