"""``simkgcl report``: a self-contained HTML report (matplotlib charts inlined as SVG)."""
