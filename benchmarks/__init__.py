"""Load and churn tools for trio-agent-server (not part of the test suite)."""
