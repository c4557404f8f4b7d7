# Baseline: plain cross-entropy, no mixing.
_base_ = ['./_base_/demo_digits.py']
