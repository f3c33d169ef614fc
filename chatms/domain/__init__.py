"""The conversation aggregate: pure Python, no I/O, stdlib only."""
