from fewstep.app.cli import main

main()
