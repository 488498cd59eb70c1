from skynet.notifier.main import main

raise SystemExit(main())
