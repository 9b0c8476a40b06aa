"""tamer: model."""
