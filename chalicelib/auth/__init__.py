"""Accounts and security: users and passwords, access and refresh tokens, brute-force limits, the audit log,
and the guard every HTTP request passes (chalicelib/auth/guard.py)."""
