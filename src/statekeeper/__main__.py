from statekeeper.cli import main

main()
