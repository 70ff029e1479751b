def register(subparsers):
    """No subcommands yet."""
