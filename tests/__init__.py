"""The test suite. A package, so that shared test helpers (plain references, toy data) are
imported by their full name (``tests.models.reference_simkgcl``), with no ``sys.path`` edits."""
