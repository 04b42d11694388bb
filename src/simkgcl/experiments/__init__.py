"""``simkgcl compare``: experiment files, a resumable runner, summaries and significance tests."""
