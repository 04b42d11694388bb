from simkgcl.cli import main

raise SystemExit(main())
