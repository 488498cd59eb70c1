from skynet.uploader.main import main

main()
