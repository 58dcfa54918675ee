"""Older import paths kept for code written against them; the engine is ``backend_ai.streaming``."""
