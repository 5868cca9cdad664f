"""Escalation: the HIPS escalation protocol for disagreements a Re-think did not resolve, and case closure."""
