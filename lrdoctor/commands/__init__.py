"""One module per CLI subcommand; each defines one click command and returns an exit code."""
