"""``python -m geofuse.cli``."""

from geofuse.cli import main

main()
