"""Glue between the engine and web frameworks other than the bundled Flask service.

Each integration is a subpackage that imports the engine and the service's framework-free
modules (settings, validation, run plans, SSE bodies) and nothing of Flask.
"""
