"""`python -m tenantctl`: the same CLI as the `tenantctl` script."""

from tenantctl.cli.app import main

main()
