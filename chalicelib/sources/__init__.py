"""Torrent sources: discovery (YTS, Torznab feeds), ranking, and health (tracker scrapes)."""
