"""tamer: flows."""
