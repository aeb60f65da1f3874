"""Drift statistics: PSI per component, label drift, a domain classifier, null calibration."""
