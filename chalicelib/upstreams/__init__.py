"""Clients for the outside world (TMDB, YTS, Torznab, trackers, ...), and what they share: rate limits, caching."""
