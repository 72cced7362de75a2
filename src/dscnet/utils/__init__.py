"""Small shared helpers (file IO, seeding, devices)."""
