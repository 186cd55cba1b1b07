"""Settings, the composition root, the schema and the embedded services for local runs."""
