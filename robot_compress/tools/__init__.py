"""Command-line tools and helpers shared by tests, benchmarks and the demo (no torch)."""
