"""Streams: choosing a source to play, and the signed grants the streamer honours."""
