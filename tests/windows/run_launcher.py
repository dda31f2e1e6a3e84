"""`python run_launcher.py --install DIR --port P`: `pospal-launcher` under the embeddable Windows Python
(which puts neither the cwd nor PYTHONPATH on sys.path), for tests/windows/test_launcher_windows.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.selfupdate.launcher import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
