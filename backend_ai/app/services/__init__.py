"""Framework-agnostic services used by the web layer."""
