from .crd import main

main()
