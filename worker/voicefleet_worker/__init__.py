"""voicefleet."""
