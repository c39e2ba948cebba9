"""Allow ``python -m tap_confluence.auth_cli``."""

from tap_confluence.auth_cli import main

main()
