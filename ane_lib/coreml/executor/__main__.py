"""``python -m ane_lib.coreml.executor --coverage [--json]``: the executor's op coverage."""

from ane_lib.coreml.executor.coverage import main

raise SystemExit(main())
