"""Chalice blueprints, one per area. Handlers parse input, call domain logic and map the result."""
