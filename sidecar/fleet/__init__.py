"""Goose-like agents driven through the real stack: the fleet runner, experiments and reports."""
