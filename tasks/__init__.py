"""tamer: tasks."""
