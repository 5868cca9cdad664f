"""Scheduling: assigns a neutral facilitator to each ready case and arranges its Re-think meeting."""
