"""One thin module per DVC stage (no stage imports another)."""
