"""The event-driven multi-chip simulator, the Report it returns and its trace."""
