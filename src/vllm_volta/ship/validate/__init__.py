"""V100 host validation: doctor, garbage detector, plan and runner (stdlib only)."""
