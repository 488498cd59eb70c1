from skynet.watcher.main import main

main()
