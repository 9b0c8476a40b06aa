"""tamer: tamer."""
