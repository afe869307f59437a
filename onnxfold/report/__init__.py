"""What a user reads: model statistics (parameters, bytes, MACs, ops), aligned tables, the fold
report (before/after, per-group plans, pass timings, validation) and progress bars.
"""
