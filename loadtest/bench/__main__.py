"""`python -m loadtest.bench`: see loadtest/bench/__init__.py."""

from loadtest.bench.runner import main

raise SystemExit(main())
