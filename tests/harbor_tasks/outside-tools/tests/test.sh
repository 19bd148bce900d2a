#!/bin/bash
# Terminal-Bench 2 style: install the test tools now (uv from astral.sh where it can be had, else
# pytest from the package index), run them, reward 1 or 0, exit 0 either way.

if curl -LsSf https://astral.sh/uv/0.9.5/install.sh -o /tmp/uv-install.sh && sh /tmp/uv-install.sh; then
  source "$HOME/.local/bin/env"
  uvx -w pytest==8.4.1 pytest /tests/test_outputs.py -rA
  status=$?
else
  echo "uv could not be installed; pytest from the package index instead" >&2
  if ! python3 -m pip install --break-system-packages --index-url http://pypi.org/simple \
      --trusted-host pypi.org --trusted-host files.pythonhosted.org pytest; then
    echo "FAILED: pytest could not be installed from the package index" >&2
    echo 0 > /logs/verifier/reward.txt
    exit 0
  fi
  python3 -m pytest /tests/test_outputs.py -rA
  status=$?
fi

if [ "$status" -eq 0 ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo "FAILED: the tests of /tests/test_outputs.py did not pass" >&2
  echo 0 > /logs/verifier/reward.txt
fi
exit 0
