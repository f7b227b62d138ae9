pytest_plugins = ["voicefleet_testbed.pytest_fixtures"]
