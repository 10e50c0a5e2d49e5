"""Berth's tests: unit/ (no root), integration/ (real containers), support/ (helpers)."""
