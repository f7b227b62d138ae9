"""voicefleet benchmarks: each writes bench/results/<name>.json (see docs/benchmarks.md)."""
