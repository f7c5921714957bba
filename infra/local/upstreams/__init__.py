"""Sample servers for upstream APIs unreachable from here: tests and `make run` without credentials use them."""
