"""The torrent core: what runs in the streamer container (ECS Fargate on AWS, a local process under make run).

For now its torrent-queue worker (tracker scrapes behind the VPN gate); the libtorrent session and the
streaming server come with the streamer issue.
"""
