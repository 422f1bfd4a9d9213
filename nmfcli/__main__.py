from nmfcli.cli import main

main()
