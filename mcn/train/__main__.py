from mcn.train.cli import main

main()
