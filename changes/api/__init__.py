"""REST API v1 (/api/v1/): thin adapters over `changes.selectors` and `changes.services`."""
