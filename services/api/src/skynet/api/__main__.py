from skynet.api.main import main

raise SystemExit(main())
