"""Dataset ingestion, decoding, validation, duplicates, shortcut audit and splits."""
