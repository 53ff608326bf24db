from vqdna.cli import main

raise SystemExit(main())
