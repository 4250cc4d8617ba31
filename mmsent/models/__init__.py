"""Towers, fusion heads, the fused classifier and its checkpoints."""
