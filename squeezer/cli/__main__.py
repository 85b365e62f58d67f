from squeezer.cli import main

main()
