"""Built-in tasks that need no download."""
