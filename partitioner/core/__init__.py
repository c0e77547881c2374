"""The ground floor: errors, the tensor graph, atomic file writes and the SI formatter."""
