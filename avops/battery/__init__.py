"""Battery intelligence: BMS reference-test logs, electrochemical features, state-of-health models."""
