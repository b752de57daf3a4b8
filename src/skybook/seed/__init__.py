"""Demo data and the seed command."""
