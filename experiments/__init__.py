"""Experiment families: named configs plus sweep runners that print result tables."""
