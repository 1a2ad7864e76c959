"""The patch-series engine: pin, series model, canonical patches, apply/refresh, policy."""
