"""Jobs run in their own process, without credentials and confined to their own files (see process.py)."""
