"""Traffic generators and recorders that run in the peer namespace."""
