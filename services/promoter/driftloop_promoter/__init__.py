"""The promoter: a passing challenger goes live on its deploy targets, exactly once."""
