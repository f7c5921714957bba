"""`python -m chalicelib.auth.cli`: account chores from a shell (the first admin, above all).

    python -m chalicelib.auth.cli create-admin alice            # the password from a prompt (twice)
    printf '%s\\n' "$PASSWORD" | python -m chalicelib.auth.cli create-admin alice --password-stdin
    python -m chalicelib.auth.cli reset-password alice

It talks to the stage its environment names (STAGE, AWS credentials; AWS_ENDPOINT_URL for the local stack:
`make admin USER=alice` sets that for `make run`'s emulator). There is no default password anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from chalicelib.auth import audit, users
from chalicelib.errors import ProjectionistError


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.auth.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("create-admin", "create an admin account"), ("reset-password", "set a user's password")):
        command = commands.add_parser(name, help=text)
        command.add_argument("username")
        command.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    args = parser.parse_args(argv)
    try:
        if args.command == "create-admin":
            users.check_username(args.username)
            user = users.create_user(args.username, _password(args.password_stdin), role="admin")
            audit.record("auth.user_created", actor="cli", target=user.username, details={"role": "admin"})
            print(f"admin {user.username!r} created; the static ADMIN_TOKEN no longer works")
        else:
            user = users.require(args.username)
            users.set_password(user, _password(args.password_stdin))
            audit.record("auth.password_reset", actor="cli", target=user.username)
            print(f"password of {user.username!r} changed; their access tokens stopped working")
    except ProjectionistError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
