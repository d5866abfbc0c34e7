"""Thin entry points: read settings, build objects, run. One module per ``streamrec`` subcommand."""
