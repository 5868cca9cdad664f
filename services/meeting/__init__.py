"""The meeting service: records each held Re-think meeting and follows its actions to completion."""
