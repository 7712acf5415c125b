from threadcast.cli import main

main()
